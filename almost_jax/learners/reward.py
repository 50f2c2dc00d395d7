"""Reward model: LLaMA trunk + bias-free scalar head, read at the appended EOS, trained with the
pairwise (Bradley-Terry) loss -log sigmoid(r_chosen - r_rejected), as in ALMoST's released code.

Input text is `input_template` filled with the comparison's prompt and response (default
`{prompt}\n\nAssistant: {response}`), tokenised without BOS, EOS appended, truncated from the
LEFT to max_len so the response end and the EOS the score is read at always survive.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_TEMPLATE = "{prompt}\n\nAssistant: {response}"


def pairwise_loss(r_chosen: jax.Array, r_rejected: jax.Array):
    """Mean -log sigmoid(r_c - r_r), plus the metrics worth watching."""
    margin = r_chosen - r_rejected
    loss = jnp.mean(-jax.nn.log_sigmoid(margin))
    both = jnp.concatenate([r_chosen, r_rejected])
    metrics = {"accuracy": jnp.mean((margin > 0).astype(jnp.float32)), "margin": jnp.mean(margin),
               "reward_mean": jnp.mean(both), "reward_std": jnp.std(both)}
    return loss, metrics


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


def score_pairs(model, params, batch):
    """(r_chosen, r_rejected): one forward pass over chosen and rejected stacked."""
    ids = jnp.concatenate([batch["chosen_ids"], batch["rejected_ids"]])
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    scores = model.apply({"params": params}, ids, mask)
    n = batch["chosen_ids"].shape[0]
    return scores[:n], scores[n:]


def make_reward_loss(model):
    def loss_fn(params, batch, rng):
        del rng
        return pairwise_loss(*score_pairs(model, params, batch))
    return loss_fn
