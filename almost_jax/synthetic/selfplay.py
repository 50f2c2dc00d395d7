"""RM-guided self-play (RMSP): simulated dialogues whose assistant turns are the best of N.

A prompted model plays the user, another the assistant. At every assistant turn N candidates
are sampled and the reward model keeps the highest-scoring one (`selection="rm"`; "random"
keeps the first sample, the ablation without RM guidance). A dialogue ends after
`max_assistant_turns` or when the simulated user produces no usable question. Every turn keeps
all candidates and their scores so the selection can be audited.

The loop is written over three injected functions, so the logic is testable without models:
  assistant(prompts, n, ids) -> list of n candidate replies per prompt
  user(prompts, ids) -> one raw continuation per prompt
  score(contexts, replies) -> RM scores (contexts: the dialogue so far, chat formatted)
`ids` name each prompt as "<query id>/<turn index>": samplers derive their random keys from them
(sampling/keys.py), so a dialogue does not depend on which others share its batch.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from almost_jax.data import chat
from almost_jax.data.schemas import Candidate, DialogueRecord, DialogueTurn


@dataclasses.dataclass(frozen=True)
class SelfPlayConfig:
    n_candidates: int = 4
    max_assistant_turns: int = 3
    selection: str = "rm"  # "rm" | "random"
    end_markers: tuple[str, ...] = ("[END]", "Goodbye", "goodbye")

    @classmethod
    def from_config(cls, cfg) -> "SelfPlayConfig":
        return cls(n_candidates=int(cfg.n_candidates), max_assistant_turns=int(cfg.max_assistant_turns),
                   selection=cfg.selection, end_markers=tuple(cfg.end_markers))


def pick(scores: Sequence[float], selection: str) -> int:
    if selection == "rm":
        return int(np.argmax(scores))  # the first of equal maxima
    if selection == "random":
        return 0  # candidates are i.i.d. samples: the first is a uniformly random one
    raise ValueError(f"selection must be rm or random, got {selection!r}")


def user_turn_usable(text: str, end_markers: Sequence[str]) -> bool:
    return bool(text.strip()) and not any(m in text for m in end_markers)


def play(queries: Sequence[tuple[str, str]], assistant: Callable, user: Callable, score: Callable,
         assistant_prompt: Callable[[list], str], user_prompt: Callable[[list], str],
         cfg: SelfPlayConfig) -> list[DialogueRecord]:
    """queries: (id, first user message). Returns one DialogueRecord per query, in order."""
    turns = {qid: [DialogueTurn(speaker=chat.HUMAN, text=q)] for qid, q in queries}
    stop_reason = {qid: "turn_limit" for qid, _ in queries}
    active = [qid for qid, _ in queries]
    for t in range(cfg.max_assistant_turns):
        if not active:
            break
        histories = [[(x.speaker, x.text) for x in turns[qid]] for qid in active]
        candidates = assistant([assistant_prompt(h) for h in histories], cfg.n_candidates,
                               [f"{qid}/{t}" for qid in active])
        contexts = [chat.format_dialogue(h) for h in histories]
        flat_ctx = [c for c, cands in zip(contexts, candidates) for _ in cands]
        flat = [r for cands in candidates for r in cands]
        flat_scores = list(score(flat_ctx, flat)) if cfg.selection == "rm" else [0.0] * len(flat)
        offset = 0
        for qid, cands in zip(active, candidates):
            sc = flat_scores[offset:offset + len(cands)]
            offset += len(cands)
            best = pick(sc, cfg.selection)
            turns[qid].append(DialogueTurn(speaker=chat.ASSISTANT, text=cands[best],
                                           candidates=[Candidate(text=c, score=float(s)) for c, s in zip(cands, sc)]))
        if t == cfg.max_assistant_turns - 1:
            break
        histories = [[(x.speaker, x.text) for x in turns[qid]] for qid in active]
        replies = user([user_prompt(h) for h in histories], [f"{qid}/{t}" for qid in active])
        still = []
        for qid, raw in zip(active, replies):
            text = chat.extract_reply(raw)
            if user_turn_usable(text, cfg.end_markers):
                turns[qid].append(DialogueTurn(speaker=chat.HUMAN, text=text))
                still.append(qid)
            else:
                stop_reason[qid] = "user_ended"
        active = still
    return [DialogueRecord(turns=turns[qid], id=qid,
                           meta={"stop": stop_reason[qid], "selection": cfg.selection, "n_candidates": cfg.n_candidates})
            for qid, _ in queries]
