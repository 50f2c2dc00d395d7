"""Win-rate of one policy against another under a pluggable pairwise judge.

A judge maps (prompts, replies_a, replies_b) to 1 (a wins), 0.5 (tie) or 0 (b wins) per pair;
prompts are the dialogue so far in the chat format ("\n\nHuman: q"), what ComparisonRecord.prompt
and the reward model take. The win-rate is the mean outcome over prompts (ties count half), with
the standard error of that mean. `annotators.Annotator` adds label noise and random order.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Judge = Callable[[Sequence[str], Sequence[str], Sequence[str]], np.ndarray]


def win_rate(judge: Judge, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> tuple[float, float]:
    outcomes = np.asarray(judge(prompts, a, b), np.float64)
    if outcomes.size == 0:
        return float("nan"), float("nan")
    se = outcomes.std(ddof=1) / math.sqrt(outcomes.size) if outcomes.size > 1 else float("nan")
    return float(outcomes.mean()), float(se)


def score_judge(score_fn: Callable[[Sequence[str], Sequence[str]], np.ndarray], tie_margin: float = 0.0) -> Judge:
    """A judge from any per-reply scorer (the oracle, a reward model): higher score wins."""
    def judge(prompts, a, b):
        sa, sb = np.asarray(score_fn(prompts, a)), np.asarray(score_fn(prompts, b))
        return np.where(sa > sb + tie_margin, 1.0, np.where(sb > sa + tie_margin, 0.0, 0.5))
    return judge


def oracle_judge() -> Judge:
    """The mini world's gold oracle on the last human turn (evaluation only, or a marked control)."""
    from almost_jax.evaluation.oracle_pairs import query_of
    from almost_jax.miniworld import oracle
    return score_judge(lambda prompts, replies: np.array([oracle.score(query_of(p), r) for p, r in zip(prompts, replies)]))


def rm_judge(scorer) -> Judge:
    """A reward model (RewardScorer) under its scoring contract: the higher raw score wins."""
    return score_judge(lambda prompts, replies: scorer.raw_scores(list(prompts), list(replies)))
