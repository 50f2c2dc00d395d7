"""Reward-model inputs: ALMoST's `{prompt}\n\nAssistant: {response}` + EOS, tokenised without BOS,
truncated from the LEFT to max_len so the response end and the EOS the score is read at always
survive; chosen and rejected rows right-padded side by side."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from almost_jax.data.truncation import Truncations

DEFAULT_TEMPLATE = "{prompt}\n\nAssistant: {response}"
# Inputs encoded without a caller's counter still warn (once per process) and are counted here.
UNCOUNTED = Truncations("reward-model input")


def encode_for_rm(tokenizer, prompt: str, response: str, max_len: int, template: str = DEFAULT_TEMPLATE,
                  truncations: Optional[Truncations] = None) -> list[int]:
    """The RM's token ids, left-truncated to max_len; a cut is counted in `truncations` (pass one
    per job or scorer and report `truncations.as_dict()`)."""
    ids = tokenizer.encode(template.format(prompt=prompt, response=response)) + [tokenizer.eos_id]
    return (truncations or UNCOUNTED).keep_last(ids, max_len)


def pad_right(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return ids, mask


def comparison_rows(tokenizer, comparisons, max_len: int, template: str = DEFAULT_TEMPLATE,
                    truncations: Optional[Truncations] = None) -> dict[str, np.ndarray]:
    """Arrays for RowBatches from records with .prompt/.chosen/.rejected; identical pairs dropped."""
    chosen, rejected = [], []
    for c in comparisons:
        if c.chosen == c.rejected:
            continue
        chosen.append(encode_for_rm(tokenizer, c.prompt, c.chosen, max_len, template, truncations))
        rejected.append(encode_for_rm(tokenizer, c.prompt, c.rejected, max_len, template, truncations))
    length = max(max(map(len, chosen)), max(map(len, rejected)))
    c_ids, c_mask = pad_right(chosen, length, tokenizer.pad_id)
    r_ids, r_mask = pad_right(rejected, length, tokenizer.pad_id)
    return {"chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids, "rejected_mask": r_mask}
