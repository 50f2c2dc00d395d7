"""Best-of-n as an inference-time policy: sample n replies per prompt, keep the one a scorer
(the reward model) ranks highest (AlpacaFarm's best-of-n; facts in peers.md 1.7).

One sampling pass gives every smaller n too: the first m of n i.i.d. samples are m i.i.d. samples,
so `pick_best(candidates, m)` is best-of-m for any m <= n (the evaluation's rows n in {1, 4, 16}
come from one pass of 16). Best-of-1 is the first sample: a plain sampled reply, not a greedy one.

The scorer is any `score(contexts, replies) -> array` (contexts: the dialogue so far in the chat
format, what `RewardScorer.raw_scores` takes), so this module needs no reward-model import; chat,
the evaluation and expert iteration all go through `sample_candidates` + `pick_best`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from almost_jax.data import chat

Score = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclasses.dataclass
class Candidates:
    """n sampled replies per prompt (already cut at the next turn) and their scores: [P][n] each."""
    replies: list[list[str]]
    scores: np.ndarray  # [P, n] float

    @property
    def n(self) -> int:
        return self.scores.shape[1] if self.scores.ndim == 2 else 0


def sample_candidates(sampler, prompts: Sequence[str], contexts: Sequence[str], score: Score, seed: int = 0,
                      progress: bool = False) -> Candidates:
    """`sampler.cfg.n` replies per prompt, each scored by `score(context, reply)`.

    prompts: what the policy sees (ending with "\\n\\nAssistant:", possibly after few-shot
    demonstrations); contexts: what the scorer sees for the same prompt (the dialogue so far)."""
    if len(prompts) != len(contexts):
        raise ValueError(f"{len(prompts)} prompts but {len(contexts)} scoring contexts")
    n = int(sampler.cfg.n)
    texts = [chat.extract_reply(c.text) for c in sampler.generate(list(prompts), seed=seed, progress=progress)]
    replies = [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
    flat_ctx = [c for c in contexts for _ in range(n)]
    scores = np.asarray(score(flat_ctx, texts), np.float64).reshape(len(prompts), n) if texts else np.zeros((0, n))
    return Candidates(replies, scores)


def best_index(scores: np.ndarray, n: int) -> np.ndarray:
    """Per prompt, the index of the highest of the first n scores (the first of equal maxima)."""
    scores = np.asarray(scores)
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"best-of-{n} needs 1 <= n <= {scores.shape[1]} (the candidates sampled per prompt)")
    return np.argmax(scores[:, :n], axis=1)


def pick_best(cands: Candidates, n: int | None = None) -> list[str]:
    """Best-of-n replies (n defaults to every candidate)."""
    idx = best_index(cands.scores, cands.n if n is None else n)
    return [r[i] for r, i in zip(cands.replies, idx)]


def best_of_n(sampler, queries: Sequence[str], score: Score, seed: int = 0) -> list[str]:
    """Best-of-`sampler.cfg.n` replies to single-turn queries in the chat format."""
    prompts = [chat.prompt_for_reply([], q) for q in queries]
    contexts = [chat.format_turn(chat.HUMAN, q) for q in queries]
    return pick_best(sample_candidates(sampler, prompts, contexts, score, seed))
