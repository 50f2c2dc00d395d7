"""Reward model: LLaMA trunk + bias-free scalar head, read at the appended EOS, trained with the
pairwise (Bradley-Terry) loss -log sigmoid(r_chosen - r_rejected), as in ALMoST's released code.

How the RM reads its input (template, max length, truncation, EOS) and what its scores mean
(normalisation statistics) is its `RewardContract` (data/rm_data.py), saved next to its params;
`load_reward_model` is the one way a trained RM is loaded, and `RewardScorer` scores by the contract.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from almost_jax.checkpoints.load import load_model_params
from almost_jax.data.rm_data import CONTRACT_FILE, RewardContract, pad_right
from almost_jax.data.tokenizer import load_tokenizer
from almost_jax.data.truncation import Truncations
from almost_jax.models.config import LlamaConfig
from almost_jax.models.llama import ScalarHeadModel, param_shardings
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
    """Scores (prompt, response) pairs with a reward model under its contract, in fixed-size padded
    batches so a long stream of texts compiles a handful of programs (one per length bucket).
    `raw_scores` are the head's outputs; `normalized_scores` subtract the contract's reward mean and
    divide by its std (what RL trains on).

    With a `mesh`, params are sharded by the logical rules and batches split over data x fsdp
    (batch size rounded up to a multiple of that width), on one host or a pod (see Sampler)."""

    def __init__(self, model, params, tokenizer, contract: RewardContract, batch_size: int = 32, bucket: int = 32,
                 mesh=None, rules=None):
        self.model, self.tok, self.contract, self.bucket = model, tokenizer, contract, bucket
        self.truncations = Truncations("reward-model input")  # inputs cut to contract.max_len, for manifests
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

    def raw_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        seqs = [self.contract.encode(self.tok, p, r, self.truncations) for p, r in zip(prompts, responses)]
        out = np.zeros(len(seqs), np.float32)
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start:start + self.batch_size]
            length = bucket_length(max(map(len, chunk)), self.bucket, self.contract.max_len)
            ids, mask = pad_right(chunk + [[self.tok.eos_id]] * (self.batch_size - len(chunk)), length,
                                  self.tok.pad_id)
            out[start:start + len(chunk)] = self._run(ids, mask)[:len(chunk)]
        return out

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores -> normalised: minus the contract's reward mean, over its std."""
        c = self.contract
        if c.reward_stats_n <= 0:
            raise ValueError("this reward model's contract has no reward statistics (reward_stats_n = 0): "
                             "normalised scores are undefined; train_rm measures them on stats_reference_pairs")
        return (np.asarray(raw, np.float32) - c.reward_mean) / (c.reward_std + 1e-8)

    def normalized_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.normalize(self.raw_scores(prompts, responses))

    def accuracy(self, prompts, chosen, rejected) -> tuple[float, np.ndarray, np.ndarray]:
        """Fraction of pairs the RM orders right, with the raw scores of both sides."""
        rc, rr = self.raw_scores(prompts, chosen), self.raw_scores(prompts, rejected)
        return float(np.mean(rc > rr)) if len(rc) else float("nan"), rc, rr


def contract_dir(path: str | Path) -> Path:
    """The RM directory: `path` itself, or its parent when `path` is the RM's params/ dir."""
    path = Path(path)
    if not (path / CONTRACT_FILE).is_file() and path.name == "params" and (path.parent / CONTRACT_FILE).is_file():
        return path.parent
    return path


def model_config(contract: RewardContract, where: str | Path = "") -> LlamaConfig:
    arch = dict(contract.architecture)
    if not arch:
        raise ValueError(f"{where}: the reward contract names no architecture")
    rope = arch.pop("rope_scaling", None)
    try:
        return LlamaConfig(**arch).replace(rope_scaling=rope)
    except TypeError as e:
        raise ValueError(f"{where}: architecture in the reward contract does not fit LlamaConfig ({e})") from e


def load_reward_model(path: str | Path, mesh=None, rules=None, batch_size: int = 32,
                      tokenizer=None) -> RewardScorer:
    """The reward model in `path` (the directory train_rm wrote: params/ + rm_contract.json; its
    params/ dir works too) as a RewardScorer. The tokenizer is the one the contract names unless
    one is given (it must have the same vocabulary size); with a mesh the params load straight
    into their shards."""
    directory = contract_dir(path)
    contract = RewardContract.load(directory)
    where = directory / CONTRACT_FILE
    cfg = model_config(contract, where)
    tok = tokenizer if tokenizer is not None else load_tokenizer(contract.tokenizer)
    if contract.tokenizer_vocab_size and tok.vocab_size != contract.tokenizer_vocab_size:
        raise ValueError(f"{where}: the RM was trained with a tokenizer of {contract.tokenizer_vocab_size} tokens "
                         f"({contract.tokenizer}); this one has {tok.vocab_size}")
    shardings = param_shardings(cfg, mesh, rules or DEFAULT_RULES, "scalar") if mesh is not None else None
    params = load_model_params(directory / contract.params, cfg, head="scalar", shardings=shardings)
    if "score_head" not in params:
        raise ValueError(f"{directory / contract.params} has no score_head: it is a language model, not a reward model")
    return RewardScorer(ScalarHeadModel(cfg), params, tok, contract, batch_size, mesh=mesh, rules=rules)


def with_reward_stats(contract: RewardContract, raw: np.ndarray) -> RewardContract:
    """The contract with the normalisation statistics of `raw` scores (both replies of reference pairs)."""
    return dataclasses.replace(contract, reward_mean=float(np.mean(raw)), reward_std=float(np.std(raw)),
                               reward_stats_n=int(np.size(raw)))
