"""PPO over a policy and a separate value model (AlpacaFarm's actor-critic), one optimizer for both.

A rollout batch is laid out as [query (left-padded to Q) | response (right-padded to R)]. The
logits at position Q-1+t predict response token t, and the value read there is the value of the
state before token t (AlpacaFarm's convention).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from almost_jax.learners import ppo_math as P
from almost_jax.parallel.shard import to_host


def rollout_arrays(query_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], query_len: int,
                   response_len: int, pad_id: int) -> dict[str, np.ndarray]:
    b = len(query_ids)
    ids = np.full((b, query_len + response_len), pad_id, np.int32)
    mask = np.zeros_like(ids)
    for i, (q, r) in enumerate(zip(query_ids, response_ids)):
        q, r = list(q)[-query_len:], list(r)[:response_len]
        ids[i, query_len - len(q):query_len] = q
        mask[i, query_len - len(q):query_len] = 1
        ids[i, query_len:query_len + len(r)] = r
        mask[i, query_len:query_len + len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "response_mask": mask[:, query_len:].astype(np.float32)}


def response_logits(model, params, batch, query_len: int, temperature: float):
    logits, _ = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    resp = logits[:, query_len - 1:-1] / temperature
    return resp


def token_logprobs(logits, tokens):
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens[..., None], -1)[..., 0]


def response_values(value_model, params, batch, query_len: int):
    values = value_model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], reduce="none")
    return values[:, query_len - 1:-1]


def make_scoring_fn(policy_model, value_model, query_len: int, temperature: float):
    """(old_logp, ref_logp, old_values) for a rollout batch, one jitted pass per model."""
    @jax.jit
    def score(policy_params, ref_params, value_params, batch):
        tokens = batch["input_ids"][:, query_len:]
        old = token_logprobs(response_logits(policy_model, policy_params, batch, query_len, temperature), tokens)
        ref = token_logprobs(response_logits(policy_model, ref_params, batch, query_len, temperature), tokens)
        values = response_values(value_model, value_params, batch, query_len)
        m = batch["response_mask"]
        return old * m, ref * m, values * m

    return score


def advantages_and_returns(scores, old_logp, ref_logp, old_values, mask, kl_coef: float, cfg):
    """Reward shaping, whitening and GAE for a whole rollout batch (AlpacaFarm's order)."""
    kl = P.kl_per_token(cfg.kl_estimator, old_logp, ref_logp) * mask
    rewards, non_score = P.shape_rewards(scores, kl, mask, kl_coef, cfg.get("score_clip") or None)
    if cfg.whiten_rewards:
        rewards = P.whiten(rewards, mask, shift_mean=False)
    adv, returns = P.gae(rewards, old_values, mask, float(cfg.gamma), float(cfg.lam))
    adv = P.whiten(adv, mask, shift_mean=True)
    return adv, returns, {"kl": jnp.mean(jnp.sum(kl, axis=1)), "non_score_reward": jnp.mean(jnp.sum(non_score, 1))}


def make_advantage_fn(cfg):
    """advantages_and_returns as one jitted program (eager dispatch of its few dozen small ops
    costs more than the math); `kl_coef` stays an argument, so an adaptive controller never
    recompiles it."""
    return jax.jit(lambda scores, old_logp, ref_logp, values, mask, kl_coef: advantages_and_returns(
        scores, old_logp, ref_logp, values, mask, kl_coef, cfg))


def ppo_epochs(step_fn, state, rollout: dict, minibatch: int, epochs: int, seed: tuple, place=jnp.asarray):
    """`epochs` passes over one rollout batch in shuffled minibatches (the last partial one is
    dropped, as AlpacaFarm does); the shuffle is a pure function of `seed`, so a resumed job
    replays the same order. `place` puts a host minibatch array on the devices (to_global over
    the mesh on a pod). Returns (state, per-minibatch metrics)."""
    host = {k: to_host(v) for k, v in rollout.items()}
    n = len(next(iter(host.values())))
    metrics = []
    for epoch in range(epochs):
        perm = np.random.default_rng([*seed, epoch]).permutation(n)
        for s in range(0, n - minibatch + 1, minibatch):
            idx = perm[s:s + minibatch]
            state, m = step_fn(state, {k: place(v[idx]) for k, v in host.items()})
            metrics.append(m)
    return state, metrics


def make_ppo_loss(policy_model, value_model, query_len: int, cfg):
    temperature, clip, clip_v = float(cfg.temperature), float(cfg.cliprange), float(cfg.cliprange_value)
    vf_coef, ent_coef = float(cfg.vf_coef), float(cfg.entropy_coef)

    def loss_fn(params, batch, rng):
        del rng
        m = batch["response_mask"]
        logits = response_logits(policy_model, params["policy"], batch, query_len, temperature)
        logp = token_logprobs(logits, batch["input_ids"][:, query_len:])
        values = response_values(value_model, params["value"], batch, query_len)
        pg, pg_m = P.policy_loss(logp, batch["old_logp"], batch["advantages"], m, clip)
        vf, vf_m = P.value_loss(values, batch["old_values"], batch["returns"], m, clip_v)
        entropy = P.entropy_from_logits(logits, m)
        loss = pg + vf_coef * vf - ent_coef * entropy
        return loss, {"policy_loss": pg, "value_loss": vf, "entropy": entropy, **pg_m, **vf_m}

    return loss_fn
