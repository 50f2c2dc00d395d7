"""On-policy RL from a reward model: one rollout core, with the algorithm's advantage estimator and
policy loss picked by name from small registries of pure functions.

One iteration (one step of train/loop.run_loop): sample `samples_per_prompt` replies per prompt
from the current policy -> score them (the RM under its contract, normalised; policy and reference
log-probs; values when the estimator needs them) -> advantages -> `ppo_epochs` passes of minibatch
updates with the shared jitted train step.

    algorithm  estimator  policy loss  value model
    ppo        gae        ppo_clip     yes (AlpacaFarm: separate network, initialised from the RM)
    rloo       rloo       reinforce    no
    grpo       grpo       grpo         no

A rollout batch is laid out as [query (left-padded to Q) | response (right-padded to R)]. The
logits at position Q-1+t predict response token t, and the value read there is the value of the
state before token t (AlpacaFarm's convention).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from almost_jax.data import chat
from almost_jax.learners import ppo_math as P
from almost_jax.parallel.shard import to_global, to_host
from almost_jax.sampling.processors import NEG_INF


# ----- registries -----

ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}  # name -> fn(scores, kl, values, mask, kl_coef, cfg) -> (arrays, metrics)
POLICY_LOSSES: dict[str, Callable] = {}  # name -> fn(logp, batch, cfg) -> (loss, metrics)


def register(registry: dict, name: str):
    def add(fn):
        registry[name] = fn
        return fn
    return add


@dataclasses.dataclass(frozen=True)
class Algorithm:
    estimator: str
    loss: str
    value_model: bool  # a learned value (critic) trained beside the policy
    min_samples_per_prompt: int  # rloo / grpo compare the samples of one prompt


ALGORITHMS = {"ppo": Algorithm("gae", "ppo_clip", True, 1), "rloo": Algorithm("rloo", "reinforce", False, 2),
              "grpo": Algorithm("grpo", "grpo", False, 2)}


def algorithm(cfg) -> Algorithm:
    """The algorithm of an `rl` config block, checked against its group size."""
    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"rl.algorithm must be one of {sorted(ALGORITHMS)}, got {cfg.algorithm!r}")
    alg = ALGORITHMS[cfg.algorithm]
    k = int(cfg.samples_per_prompt)
    if k < alg.min_samples_per_prompt:
        raise ValueError(f"rl.algorithm={cfg.algorithm} compares the samples of each prompt: it needs "
                         f"rl.samples_per_prompt >= {alg.min_samples_per_prompt}, got {k} "
                         f"(configs/*/{cfg.algorithm}.py carry the algorithm's defaults)")
    if int(cfg.rollout_batch_size) % k or int(cfg.step_batch_size) > int(cfg.rollout_batch_size):
        raise ValueError(f"rl.rollout_batch_size={cfg.rollout_batch_size} must be a multiple of "
                         f"rl.samples_per_prompt={k} and at least rl.step_batch_size={cfg.step_batch_size}")
    return alg


# ----- advantage estimators: (scores [B], per-token kl [B, T], values [B, T] | None, mask, kl_coef, cfg) -----

@register(ADVANTAGE_ESTIMATORS, "gae")
def gae_advantages(scores, kl, values, mask, kl_coef, cfg):
    """AlpacaFarm: per-token reward -kl_coef * kl plus the score at the last token, rewards whitened
    (mean kept), GAE, advantages whitened; the value targets are the returns."""
    rewards, non_score = P.shape_rewards(scores, kl, mask, kl_coef, cfg.get("score_clip") or None)
    if cfg.whiten_rewards:
        rewards = P.whiten(rewards, mask, shift_mean=False)
    adv, returns = P.gae(rewards, values, mask, float(cfg.gamma), float(cfg.lam))
    return ({"advantages": P.whiten(adv, mask, shift_mean=True), "returns": returns},
            {"non_score_reward": jnp.mean(jnp.sum(non_score, axis=1))})


@register(ADVANTAGE_ESTIMATORS, "rloo")
def rloo_advantages(scores, kl, values, mask, kl_coef, cfg):
    """Sequence reward r_i = score_i - kl_coef * KL_i (KL_i summed over the reply), leave-one-out
    baseline within each prompt's samples, the same advantage on every token of the reply."""
    del values
    penalty = -kl_coef * jnp.sum(kl, axis=1)
    adv = P.rloo_advantages(scores + penalty, int(cfg.samples_per_prompt))
    return {"advantages": adv[:, None] * mask}, {"non_score_reward": jnp.mean(penalty)}


@register(ADVANTAGE_ESTIMATORS, "grpo")
def grpo_advantages(scores, kl, values, mask, kl_coef, cfg):
    """Group-normalised scores (no KL in the reward: GRPO puts it in the loss), on every token."""
    del kl, values, kl_coef
    adv = P.grpo_advantages(scores, int(cfg.samples_per_prompt), bool(cfg.grpo_std_normalize))
    return {"advantages": adv[:, None] * mask}, {}


# ----- policy losses: (logp [B, T] of the policy being trained, minibatch, cfg) -----

@register(POLICY_LOSSES, "ppo_clip")
def ppo_clip_loss(logp, batch, cfg):
    return P.policy_loss(logp, batch["old_logp"], batch["advantages"], batch["response_mask"], float(cfg.cliprange))


@register(POLICY_LOSSES, "reinforce")
def reinforce_loss(logp, batch, cfg):
    m = batch["response_mask"]
    return P.sequence_policy_loss(jnp.sum(logp * m, axis=1), jnp.sum(batch["old_logp"] * m, axis=1),
                                  P.masked_mean(batch["advantages"], m, axis=1), float(cfg.cliprange))


@register(POLICY_LOSSES, "grpo")
def grpo_loss(logp, batch, cfg):
    return P.grpo_policy_loss(logp, batch["old_logp"], batch["ref_logp"], batch["advantages"], batch["response_mask"],
                              float(cfg.cliprange), jnp.mean(batch["kl_coef"]), bool(cfg.grpo_length_normalize))


# ----- the rollout core -----

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


def response_logits(model, params, batch, query_len: int, temperature: float, valid_vocab: int = 0):
    """Logits predicting each response token, divided by the sampling temperature; ids at or past
    `valid_vocab` (padded embedding rows the sampler never draws) are excluded, as in the sampler."""
    logits, _ = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    resp = logits[:, query_len - 1:-1] / temperature
    if 0 < valid_vocab < resp.shape[-1]:
        resp = jnp.where(jnp.arange(resp.shape[-1]) < valid_vocab, resp, NEG_INF)
    return resp


def token_logprobs(logits, tokens):
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens[..., None], -1)[..., 0]


def response_values(value_model, params, batch, query_len: int):
    values = value_model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], reduce="none")
    return values[:, query_len - 1:-1]


def make_scoring_fn(policy_model, value_model, query_len: int, temperature: float, valid_vocab: int = 0):
    """(old_logp, ref_logp, old_values or None) of a rollout batch, one jitted pass per model."""
    @jax.jit
    def score(policy_params, ref_params, value_params, batch):
        tokens = batch["input_ids"][:, query_len:]
        m = batch["response_mask"]
        logp = lambda p: token_logprobs(response_logits(policy_model, p, batch, query_len, temperature,  # noqa: E731
                                                        valid_vocab), tokens) * m
        values = None if value_model is None else response_values(value_model, value_params, batch, query_len) * m
        return logp(policy_params), logp(ref_params), values

    return score


def make_advantage_fn(cfg):
    """The configured estimator as one jitted program (eager dispatch of its few dozen small ops
    costs more than the math); `kl_coef` stays an argument, so an adaptive controller never
    recompiles it. Also returns `kl`: the batch mean of each reply's summed per-token KL
    (`cfg.kl_estimator`), in nats per reply: what the controller and the KL budget read."""
    estimator = ADVANTAGE_ESTIMATORS[algorithm(cfg).estimator]

    def advantages(scores, old_logp, ref_logp, values, mask, kl_coef):
        kl = P.kl_per_token(cfg.kl_estimator, old_logp, ref_logp) * mask
        arrays, metrics = estimator(scores, kl, values, mask, kl_coef, cfg)
        return arrays, {"kl": jnp.mean(jnp.sum(kl, axis=1)), **metrics}

    return jax.jit(advantages)


def make_rl_loss(policy_model, value_model, query_len: int, cfg, valid_vocab: int = 0):
    """loss_fn(params, minibatch, rng) for train/step: the algorithm's policy loss, minus the entropy
    bonus, plus vf_coef x PPO's clipped value loss when there is a value model."""
    policy_loss = POLICY_LOSSES[algorithm(cfg).loss]
    temperature, clip_v = float(cfg.temperature), float(cfg.cliprange_value)
    vf_coef, ent_coef = float(cfg.vf_coef), float(cfg.entropy_coef)

    def loss_fn(params, batch, rng):
        del rng
        m = batch["response_mask"]
        logits = response_logits(policy_model, params["policy"], batch, query_len, temperature, valid_vocab)
        logp = token_logprobs(logits, batch["input_ids"][:, query_len:])
        pg, metrics = policy_loss(logp, batch, cfg)
        entropy = P.entropy_from_logits(logits, m)
        loss = pg - ent_coef * entropy
        metrics = {"policy_loss": pg, "entropy": entropy, **metrics}
        if value_model is not None:
            values = response_values(value_model, params["value"], batch, query_len)
            vf, vf_m = P.value_loss(values, batch["old_values"], batch["returns"], m, clip_v)
            loss = loss + vf_coef * vf
            metrics.update(value_loss=vf, **vf_m)
        return loss, metrics

    return loss_fn


def rollout_keys(cfg) -> tuple[str, ...]:
    """The arrays of one rollout that the train step reads (all [B, ...], split over the batch axes)."""
    keys = ("input_ids", "attention_mask", "response_mask", "old_logp", "ref_logp", "advantages", "kl_coef")
    return keys + (("old_values", "returns") if algorithm(cfg).value_model else ())


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


def make_rl_step(cfg, seed: int, tokenizer, policy_model, value_model, sampler, scorer, ref_params, train_step,
                 place: Callable, extra_shardings, gold: Optional[Callable] = None):
    """One iteration as run_loop's step function: `step_fn(state, (step, queries)) -> (state, metrics)`.

    `queries`: the step's user queries (rollout_batch_size / samples_per_prompt of them); `sampler`
    draws samples_per_prompt replies each (prompt-major); `scorer` is the RM (its normalised scores
    are the rewards); `train_step` the jitted step over rollout_keys(cfg); `place` puts a host array
    on the mesh; `gold(queries, replies)`, when given, is logged only (the mini world's oracle).
    The KL coefficient lives in state.extra["kl_coef"] (its sharding: extra_shardings["kl_coef"]),
    so the adaptive controller's state is checkpointed with the params."""
    Q, R, k = int(cfg.query_len), int(cfg.response_len), int(cfg.samples_per_prompt)
    scoring = make_scoring_fn(policy_model, value_model, Q, float(cfg.temperature), tokenizer.vocab_size)
    advantages = make_advantage_fn(cfg)
    controller = P.KLController(cfg.kl_controller, float(cfg.kl_target_per_reply), float(cfg.kl_k_beta))

    def step_fn(state, item):
        step, queries = item
        kl_coef = float(jax.device_get(state.extra["kl_coef"]))
        prompts = [chat.prompt_for_reply([], q) for q in queries]
        t0 = time.perf_counter()
        comps = list(sampler.generate(prompts, seed=seed * 100003 + step, progress=False, params=state.params["policy"]))
        t_roll = time.perf_counter() - t0
        host = rollout_arrays([sampler.encode(p) for p in prompts for _ in range(k)], [c.token_ids for c in comps],
                              Q, R, tokenizer.pad_id)
        arrays = {key: place(v) for key, v in host.items()}
        replies = [chat.extract_reply(c.text) for c in comps]
        raw = scorer.raw_scores([chat.format_turn(chat.HUMAN, q) for q in queries for _ in range(k)], replies)
        no_eos = np.array([c.finish_reason == "length" for c in comps], np.float32)
        scores = scorer.normalize(raw) - float(cfg.missing_eos_penalty) * no_eos
        old_logp, ref_logp, values = scoring(state.params["policy"], ref_params,
                                             state.params["value"] if value_model is not None else None, arrays)
        out, adv_m = advantages(place(scores), old_logp, ref_logp, values, arrays["response_mask"], kl_coef)
        rollout = {**arrays, "old_logp": old_logp, "ref_logp": ref_logp, **out,
                   "kl_coef": place(np.full(len(comps), kl_coef, np.float32))}
        if value_model is not None:
            rollout["old_values"] = values
        jax.block_until_ready(rollout)
        t1 = time.perf_counter()
        state, train_m = ppo_epochs(train_step, state, rollout, int(cfg.step_batch_size), int(cfg.ppo_epochs),
                                    (seed, step), place)
        jax.block_until_ready(state.params)
        t_train = time.perf_counter() - t1
        kl = float(adv_m["kl"])
        state = state.replace(extra={**state.extra, "kl_coef": to_global(
            np.float32(controller.update(kl_coef, kl, n_steps=len(comps))), extra_shardings["kl_coef"])})
        mask = host["response_mask"]
        sampled = np.zeros_like(mask)  # the sampler's own log-probs of the same tokens
        for i, c in enumerate(comps):
            sampled[i, :min(len(c.logprobs), R)] = c.logprobs[:R]
        n_tokens = float(mask.sum())
        metrics = {"reward": float(np.mean(raw)), "reward_normalized": float(np.mean(scorer.normalize(raw))),
                   "score": float(np.mean(scores)), "no_eos_fraction": float(np.mean(no_eos)),
                   "kl": kl, "kl_coef": kl_coef, "response_length": n_tokens / len(comps),
                   "logprob_gap": float(np.sum(np.abs(to_host(old_logp) - sampled) * mask) / max(n_tokens, 1.0)),
                   "rollout_tokens_per_s": n_tokens / t_roll, "time_rollout_s": t_roll,
                   "time_scoring_s": t1 - t0 - t_roll, "time_train_s": t_train,
                   "train_tokens_per_s": n_tokens * int(cfg.ppo_epochs) / t_train,
                   **{key: float(jax.device_get(v)) for key, v in adv_m.items() if key != "kl"},
                   **{key: float(np.mean([float(m[key]) for m in train_m])) for key in (train_m[0] if train_m else ())}}
        if gold is not None:
            metrics["gold_score"] = gold([q for q in queries for _ in range(k)], replies)
        return state, metrics

    return step_fn
