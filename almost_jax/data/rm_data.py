"""Reward-model inputs: ALMoST's `{prompt}\n\nAssistant: {response}` + EOS, tokenised without BOS,
truncated from the LEFT to max_len so the response end and the EOS the score is read at always
survive; chosen and rejected rows right-padded side by side."""
from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_TEMPLATE = "{prompt}\n\nAssistant: {response}"


def encode_for_rm(tokenizer, prompt: str, response: str, max_len: int, template: str = DEFAULT_TEMPLATE) -> list[int]:
    ids = tokenizer.encode(template.format(prompt=prompt, response=response)) + [tokenizer.eos_id]
    return ids[-max_len:]


def pad_right(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return ids, mask


def comparison_rows(tokenizer, comparisons, max_len: int, template: str = DEFAULT_TEMPLATE) -> dict[str, np.ndarray]:
    """Arrays for RowBatches from records with .prompt/.chosen/.rejected; identical pairs dropped."""
    chosen, rejected = [], []
    for c in comparisons:
        if c.chosen == c.rejected:
            continue
        chosen.append(encode_for_rm(tokenizer, c.prompt, c.chosen, max_len, template))
        rejected.append(encode_for_rm(tokenizer, c.prompt, c.rejected, max_len, template))
    length = max(max(map(len, chosen)), max(map(len, rejected)))
    c_ids, c_mask = pad_right(chosen, length, tokenizer.pad_id)
    r_ids, r_mask = pad_right(rejected, length, tokenizer.pad_id)
    return {"chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids, "rejected_mask": r_mask}
