"""Reward-model inputs: ALMoST's `{prompt}\n\nAssistant: {response}` + EOS, tokenised without BOS,
truncated from the LEFT to max_len so the response end and the EOS the score is read at always
survive; chosen and rejected rows right-padded side by side.

`RewardContract` is how a trained RM reads its input and what its scores mean (template, length,
truncation, EOS, normalisation statistics, architecture, tokenizer). train_rm saves it next to the
params as `rm_contract.json`; every user of the RM loads it with them (`learners.reward.load_reward_model`),
so nothing scores with another template or length than the RM was trained with.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from almost_jax.data.truncation import Truncations

DEFAULT_TEMPLATE = "{prompt}\n\nAssistant: {response}"
# Inputs encoded without a caller's counter still warn (once per process) and are counted here.
UNCOUNTED = Truncations("reward-model input")
CONTRACT_FILE = "rm_contract.json"


@dataclasses.dataclass(frozen=True)
class RewardContract:
    """The scoring contract of one reward model. `{prompt}` is the dialogue so far without the final
    assistant label (e.g. "\n\nHuman: q"); the score is read at the appended EOS. Raw scores minus
    `reward_mean`, divided by `reward_std` (measured on `reward_stats_n` replies of reference pairs),
    are the normalised scores RL trains on; `reward_stats_n == 0` means no statistics were measured."""

    input_template: str = DEFAULT_TEMPLATE
    max_len: int = 1024
    truncation_side: str = "left"  # the only encoding encode_for_rm implements: keep the end
    append_eos: bool = True  # EOS appended, the score read at it (the last real token)
    add_bos: bool = False
    reward_mean: float = 0.0
    reward_std: float = 1.0
    reward_stats_n: int = 0
    architecture: dict = dataclasses.field(default_factory=dict)  # models.config.LlamaConfig fields
    tokenizer: str = ""  # the tokenizer the RM was trained with
    tokenizer_vocab_size: int = 0
    params: str = "params"  # relative to the contract's directory

    def __post_init__(self):
        encoding = (self.truncation_side, self.append_eos, self.add_bos)
        if encoding != ("left", True, False):
            raise ValueError(f"reward contract: encoding (truncation_side, append_eos, add_bos) = {encoding}; "
                             "only ('left', True, False) is implemented (data/rm_data.encode_for_rm)")

    def encode(self, tokenizer, prompt: str, response: str, truncations: Optional[Truncations] = None) -> list[int]:
        return encode_for_rm(tokenizer, prompt, response, self.max_len, self.input_template, truncations)

    def save(self, directory: str | Path) -> Path:
        from almost_jax.data.schemas import write_json_atomic
        path = Path(directory) / CONTRACT_FILE
        write_json_atomic(path, dataclasses.asdict(self))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "RewardContract":
        path = Path(directory) / CONTRACT_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {directory} holds no reward-model scoring contract (template, max_len, "
                f"reward statistics, architecture). almost_jax.jobs.train_rm writes it next to params/; for an "
                f"RM trained without it, write one with almost_jax.data.rm_data.RewardContract(...).save(dir)")
        try:
            fields = json.loads(path.read_text())
            return cls(**fields)
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a reward contract ({e})") from e


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
