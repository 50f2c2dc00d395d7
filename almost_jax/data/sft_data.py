"""Supervised fine-tuning examples in the chat format, with loss on assistant tokens only.

An example is (token ids, loss mask): BOS (when the tokenizer's model uses one) + the dialogue context + the assistant reply + EOS,
where only the reply and its EOS are trained on (ALMoST's input/output format). Boundaries are
found by tokenising each prefix, as Alpaca does, so tokenizers that merge across the boundary
are handled. Short examples can be packed several to a row: the attention mask then carries a
segment id per example and positions restart at 0 in each segment.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from almost_jax.data import chat


def example_from_pair(tokenizer, context: str, reply: str) -> tuple[list[int], list[int]]:
    """context ends with "\\n\\nAssistant:"; the trained text is " " + reply + EOS."""
    prompt_ids = tokenizer.prefix_ids + tokenizer.encode(context)
    full = tokenizer.prefix_ids + tokenizer.encode(context + chat.continuation(reply)) + [tokenizer.eos_id]
    boundary = _common_prefix(prompt_ids, full)
    return full, [0] * boundary + [1] * (len(full) - boundary)


def examples_from_dialogue(tokenizer, turns: Sequence[tuple[str, str]], mode: str = "per_turn"):
    """turns: [(speaker, text)]. "per_turn": one example per assistant turn (its context is the
    dialogue before it); "all_turns": one example with every assistant reply trained on."""
    if mode == "per_turn":
        out = []
        for i, (speaker, text) in enumerate(turns):
            if speaker == "assistant":
                context = chat.format_dialogue(turns[:i]) + chat.REPLY_PREFIX
                out.append(example_from_pair(tokenizer, context, text))
        return out
    if mode != "all_turns":
        raise ValueError(f"sft mode must be per_turn or all_turns, got {mode!r}")
    ids, text = tokenizer.prefix_ids, ""
    mask = [0] * len(ids)

    def extend(piece: str, flag: int):
        nonlocal ids, mask, text
        text += piece
        new = tokenizer.prefix_ids + tokenizer.encode(text)
        keep = _common_prefix(ids, new)
        ids, mask = new, mask[:keep] + [flag] * (len(new) - keep)

    for speaker, turn_text in turns:
        if speaker == "assistant":
            extend(chat.REPLY_PREFIX, 0)
            extend(chat.continuation(turn_text), 1)
        else:
            extend(chat.format_turn(speaker, turn_text), 0)
    return [(ids + [tokenizer.eos_id], mask + [1])]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def to_rows(examples: Iterable[tuple[list[int], list[int]]], seq_len: int, pad_id: int, pack: bool = True,
            truncate: str = "left") -> dict[str, np.ndarray]:
    """Arrays for RowBatches: input_ids, attention_mask (segment ids), loss_mask, positions.

    Examples longer than seq_len are truncated from the left (keeping the reply); with `pack`,
    examples are placed greedily, in order, into rows while they fit."""
    rows: list[list[tuple[list[int], list[int]]]] = []
    used = []
    for ids, mask in examples:
        if len(ids) > seq_len:
            ids, mask = (ids[-seq_len:], mask[-seq_len:]) if truncate == "left" else (ids[:seq_len], mask[:seq_len])
        if pack and rows and used[-1] + len(ids) <= seq_len:
            rows[-1].append((ids, mask))
            used[-1] += len(ids)
        else:
            rows.append([(ids, mask)])
            used.append(len(ids))
    n = len(rows)
    out = {"input_ids": np.full((n, seq_len), pad_id, np.int32), "attention_mask": np.zeros((n, seq_len), np.int32),
           "loss_mask": np.zeros((n, seq_len), np.int32), "positions": np.zeros((n, seq_len), np.int32)}
    for r, row in enumerate(rows):
        start = 0
        for seg, (ids, mask) in enumerate(row, 1):
            end = start + len(ids)
            out["input_ids"][r, start:end] = ids
            out["attention_mask"][r, start:end] = seg
            out["loss_mask"][r, start:end] = mask
            out["positions"][r, start:end] = np.arange(len(ids))
            start = end
    return out
