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

from almost_jax.data.rm_data import DEFAULT_TEMPLATE, encode_for_rm, pad_right
from almost_jax.models.llama import param_shardings
from almost_jax.parallel import DEFAULT_RULES, batch_sharding, mesh_context
from almost_jax.parallel.shard import batch_multiple, to_global, to_host
from almost_jax.sampling.batcher import bucket_length


def pairwise_loss(r_chosen: jax.Array, r_rejected: jax.Array):
    """Mean -log sigmoid(r_c - r_r), plus the metrics worth watching."""
    margin = r_chosen - r_rejected
    loss = jnp.mean(-jax.nn.log_sigmoid(margin))
    both = jnp.concatenate([r_chosen, r_rejected])
    metrics = {"accuracy": jnp.mean((margin > 0).astype(jnp.float32)), "margin": jnp.mean(margin),
               "reward_mean": jnp.mean(both), "reward_std": jnp.std(both)}
    return loss, metrics


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
    long stream of texts compiles a handful of programs (one per length bucket).

    With a `mesh`, params are sharded by the logical rules and batches split over data x fsdp
    (batch size rounded up to a multiple of that width), on one host or a pod (see Sampler)."""

    def __init__(self, model, params, tokenizer, max_len: int, batch_size: int = 32,
                 template: str = DEFAULT_TEMPLATE, bucket: int = 32, mesh=None, rules=None):
        self.tok, self.max_len, self.template, self.bucket = tokenizer, max_len, template, bucket
        self.mesh, self.rules = mesh, rules or DEFAULT_RULES
        fn = lambda p, ids, mask: model.apply({"params": p}, ids, mask)  # noqa: E731
        if mesh is None:
            self._score, self._batch_sh = jax.jit(fn), None
        else:
            shardings = param_shardings(model.cfg, mesh, self.rules, "scalar")
            params = jax.device_put(params, shardings)
            self._batch_sh = batch_sharding(mesh)
            batch_size = batch_multiple(batch_size, mesh)
            self._score = jax.jit(fn, in_shardings=(shardings, self._batch_sh, self._batch_sh))
        self.params, self.batch_size = params, batch_size

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.mesh is None:
            return np.asarray(self._score(self.params, ids, mask))
        with mesh_context(self.mesh, self.rules):
            return to_host(self._score(self.params, to_global(ids, self._batch_sh), to_global(mask, self._batch_sh)))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        seqs = [encode_for_rm(self.tok, p, r, self.max_len, self.template) for p, r in zip(prompts, responses)]
        out = np.zeros(len(seqs), np.float32)
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start:start + self.batch_size]
            length = bucket_length(max(map(len, chunk)), self.bucket, self.max_len)
            ids, mask = pad_right(chunk + [[self.tok.eos_id]] * (self.batch_size - len(chunk)), length,
                                  self.tok.pad_id)
            out[start:start + len(chunk)] = self._run(ids, mask)[:len(chunk)]
        return out

    def accuracy(self, prompts, chosen, rejected) -> tuple[float, np.ndarray, np.ndarray]:
        rc, rr = self.score(prompts, chosen), self.score(prompts, rejected)
        return float(np.mean(rc > rr)) if len(rc) else float("nan"), rc, rr
