"""Gold-oracle evaluation of a policy on held-out mini-world tasks.

The policy is any `generate(prompts: list[str], ids: list[str]) -> list[str]` (raw
continuations; `ids` are the task ids, from which a sampler derives its random keys); this module
only builds prompts (zero-shot chat, or k-shot from a prompt template), parses replies the same
way the data jobs do, and scores them with the oracle. The oracle is used only here, never for
training. Means come with the half-width of their 95% confidence interval (normal approximation
over tasks); `paired_difference` compares two policies on the same tasks.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np

from almost_jax.data import chat
from almost_jax.data.templates import PromptTemplate
from almost_jax.miniworld import oracle


def build_prompts(instructions: Sequence[str], template: Optional[PromptTemplate] = None, n_shots: int = 0) -> list[str]:
    if template is None or n_shots == 0:
        return [chat.prompt_for_reply([], q) for q in instructions]
    return [template.render(n_shots, q) for q in instructions]


def mean_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """(mean, half-width of its 95% CI): normal approximation, z * sample std / sqrt(n)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    half = z * float(np.std(x, ddof=1)) / np.sqrt(len(x)) if len(x) > 1 else float("inf")
    return float(np.mean(x)), half


def paired_difference(a: Sequence[float], b: Sequence[float], families: Sequence[str]) -> dict:
    """mean(a - b) with its 95% CI, overall and per family, for two policies' scores on the same
    tasks (pairing removes the tasks' own difficulty from the variance)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    fams = np.asarray(families)
    out = {"all": mean_ci(d)}
    out.update({fam: mean_ci(d[fams == fam]) for fam in sorted(set(families))})
    return out


def task_scores(instructions: Sequence[str], replies: Sequence[str]) -> list[float]:
    return [oracle.score(q, r) for q, r in zip(instructions, replies)]


def score_replies(instructions: Sequence[str], replies: Sequence[str], families: Sequence[str]) -> dict:
    """Mean oracle score overall and per family (each with `_ci`, the 95% CI half-width),
    exact-match and well-formed rates."""
    per_family = defaultdict(list)
    exact, formatted, scores = [], [], []
    for q, r, fam in zip(instructions, replies, families):
        d = oracle.score_details(q, r)
        per_family[fam].append(d["score"])
        scores.append(d["score"])
        exact.append(float(d["exact"]))
        formatted.append(float(d["format"] >= 1.0))
    out = {"score": float(np.mean(scores)), "score_ci": mean_ci(scores)[1], "exact": float(np.mean(exact)),
           "well_formed": float(np.mean(formatted)), "n": len(scores)}
    for fam, v in sorted(per_family.items()):
        out[f"score_{fam}"], out[f"score_{fam}_ci"] = mean_ci(v)
    return out


def evaluate_policy(generate: Callable[[list[str], list[str]], list[str]], tasks,
                    template: Optional[PromptTemplate] = None, n_shots: int = 0) -> tuple[dict, list[str]]:
    """tasks: records with .id, .prompt (the instruction) and .meta["family"]. Returns (scores, replies)."""
    instructions = [t.prompt for t in tasks]
    raw = generate(build_prompts(instructions, template, n_shots), [t.id for t in tasks])
    replies = [chat.extract_reply(r) for r in raw]
    return score_replies(instructions, replies, [t.meta["family"] for t in tasks]), replies
