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


class RewardScorer:
    """Scores (prompt, response) pairs with a reward model, in fixed-size padded batches so a
    long stream of texts compiles a handful of programs (one per length bucket)."""

    def __init__(self, model, params, tokenizer, max_len: int, batch_size: int = 32,
                 template: str = DEFAULT_TEMPLATE, bucket: int = 32):
        self.params, self.tok, self.max_len = params, tokenizer, max_len
        self.batch_size, self.template, self.bucket = batch_size, template, bucket
        self._score = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, mask))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        seqs = [encode_for_rm(self.tok, p, r, self.max_len, self.template) for p, r in zip(prompts, responses)]
        out = np.zeros(len(seqs), np.float32)
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start:start + self.batch_size]
            length = min(self.max_len, -(-max(map(len, chunk)) // self.bucket) * self.bucket)
            ids, mask = pad_right(chunk + [[self.tok.eos_id]] * (self.batch_size - len(chunk)), length,
                                  self.tok.pad_id)
            out[start:start + len(chunk)] = np.asarray(self._score(self.params, ids, mask))[:len(chunk)]
        return out

    def accuracy(self, prompts, chosen, rejected) -> tuple[float, np.ndarray, np.ndarray]:
        rc, rr = self.score(prompts, chosen), self.score(prompts, rejected)
        return float(np.mean(rc > rr)) if len(rc) else float("nan"), rc, rr
