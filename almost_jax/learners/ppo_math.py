"""On-policy RL math as pure functions over [B, T] response-token arrays: PPO (AlpacaFarm's recipe),
RLOO and GRPO (facts and defaults: shared/papers/peers.md sections 1 and 4b).

`mask` is 1 on real response tokens and 0 on padding after a response ends; every statistic is
taken over real tokens only, and padding never leaks into real positions. Grouped estimators take
rows prompt-major: rows g*k .. g*k+k-1 are the k samples of prompt g (the sampler's order).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


# ----- KL estimators (per token, policy vs reference) -----

def _k1(logp, ref):
    return logp - ref


KL_ESTIMATORS = {
    "kl": _k1,  # k1: unbiased, can be negative per token
    "abs": lambda logp, ref: jnp.abs(logp - ref),
    "mse": lambda logp, ref: 0.5 * jnp.square(logp - ref),  # k2
    "k3": lambda logp, ref: jnp.expm1(ref - logp) - (ref - logp),  # (r - 1) - log r, r = p_ref / p
    "clamped": lambda logp, ref: jnp.maximum(logp - ref, 0.0),  # AlpacaFarm
}


def kl_per_token(name: str, logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    if name not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {name!r}; known: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name](logp, ref_logp)


# ----- masked statistics -----

def masked_mean(x, mask, axis=None):
    return jnp.sum(x * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def masked_var(x, mask):
    """Population variance over masked entries."""
    mean = masked_mean(x, mask)
    return masked_mean(jnp.square(x - mean), mask)


def whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8):
    """(x - mean) / std over masked entries; with shift_mean=False the mean is added back
    (AlpacaFarm whitens rewards that way). Padding is left at 0."""
    mean = masked_mean(x, mask)
    out = (x - mean) / (jnp.sqrt(masked_var(x, mask)) + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# ----- rewards -----

def last_index(mask):
    """Index of the last real token per row (0 for an empty row)."""
    t = mask.shape[1]
    return jnp.maximum(t - 1 - jnp.argmax(mask[:, ::-1] > 0, axis=1), 0)


def shape_rewards(scores, kl, mask, kl_coef, score_clip=None):
    """Per-token reward: -kl_coef * kl on response tokens, plus the sequence score at its last
    token. Returns (rewards [B, T], non_score_rewards [B, T])."""
    if score_clip is not None:
        scores = jnp.clip(scores, -score_clip, score_clip)
    non_score = -kl_coef * kl * mask
    at_last = jax.nn.one_hot(last_index(mask), mask.shape[1], dtype=non_score.dtype)
    return non_score + at_last * scores[:, None], non_score


# ----- advantages -----

def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation; the value after a response's last token is 0.
    Returns (advantages, returns), both 0 on padding."""
    rewards, values, mask = rewards * mask, values * mask, mask.astype(rewards.dtype)
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1) * \
        jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    deltas = rewards + gamma * next_values - values

    def step(carry, xs):
        delta, m = xs
        adv = (delta + gamma * lam * carry) * m
        return adv, adv

    _, adv = jax.lax.scan(step, jnp.zeros(rewards.shape[0], rewards.dtype), (deltas.T[::-1], mask.T[::-1]))
    advantages = adv[::-1].T
    return advantages, (advantages + values) * mask


def rloo_advantages(rewards, k: int):
    """RLOO: A_i = r_i - mean of the other k-1 rewards of the same prompt. rewards [B] -> [B]."""
    g = rewards.reshape(-1, k)
    baseline = (jnp.sum(g, axis=1, keepdims=True) - g) / (k - 1)
    return (g - baseline).reshape(-1)


def grpo_advantages(rewards, k: int, std_normalize: bool = True, eps: float = 1e-4):
    """GRPO: A_i = (r_i - group mean) / (group std + eps), the std with Bessel's correction (n - 1, as
    torch.std); Dr. GRPO (`std_normalize=False`) keeps only the centring. rewards [B] -> [B]."""
    g = rewards.reshape(-1, k)
    centred = g - jnp.mean(g, axis=1, keepdims=True)
    if std_normalize:
        centred = centred / (jnp.std(g, axis=1, keepdims=True, ddof=1) + eps)
    return centred.reshape(-1)


# ----- losses -----

def policy_loss(logp, old_logp, advantages, mask, clip: float):
    """Clipped surrogate; metrics: fraction of clipped tokens, approx KL 0.5 * E[(logp - old)^2]."""
    ratio = jnp.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(jnp.maximum(unclipped, clipped), mask)
    return loss, {"clipfrac": masked_mean((clipped > unclipped).astype(jnp.float32), mask),
                  "approx_kl": 0.5 * masked_mean(jnp.square(logp - old_logp), mask)}


def sequence_policy_loss(seq_logp, old_seq_logp, advantages, clip: float):
    """REINFORCE on whole sequences, -A * log p(y|x), through PPO's clipped importance ratio of the
    whole sequence: the ratio is 1 on the rollout's own policy (then this is exactly REINFORCE), and
    the clip keeps later minibatches of the same rollout from moving far from it. [B] arrays."""
    ratio = jnp.exp(seq_logp - old_seq_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    return jnp.mean(jnp.maximum(unclipped, clipped)), {
        "clipfrac": jnp.mean((clipped > unclipped).astype(jnp.float32)),
        "approx_kl": 0.5 * jnp.mean(jnp.square(seq_logp - old_seq_logp))}


def grpo_policy_loss(logp, old_logp, ref_logp, advantages, mask, clip: float, kl_coef, length_normalize: bool = True):
    """GRPO: per token, PPO's clipped surrogate plus kl_coef * k3(policy || reference); averaged over
    each reply's tokens, then over replies. Dr. GRPO (`length_normalize=False`): summed over tokens
    and divided by a constant (rows x the padded reply length), so long replies are not discounted."""
    ratio = jnp.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    kl = kl_per_token("k3", logp, ref_logp)
    per_token = (jnp.maximum(unclipped, clipped) + kl_coef * kl) * mask
    if length_normalize:
        loss = jnp.mean(jnp.sum(per_token, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0))
    else:
        loss = jnp.sum(per_token) / per_token.size
    return loss, {"clipfrac": masked_mean((clipped > unclipped).astype(jnp.float32), mask),
                  "approx_kl": 0.5 * masked_mean(jnp.square(logp - old_logp), mask),
                  "kl_loss": masked_mean(kl, mask)}


def value_loss(values, old_values, returns, mask, clip_value: float):
    vclipped = jnp.clip(values, old_values - clip_value, old_values + clip_value)
    a, b = jnp.square(values - returns), jnp.square(vclipped - returns)
    return 0.5 * masked_mean(jnp.maximum(a, b), mask), {"vf_clipfrac": masked_mean((b > a).astype(jnp.float32), mask)}


def entropy_from_logits(logits, mask):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return masked_mean(-jnp.sum(jnp.exp(logp) * logp, axis=-1), mask)


# ----- KL controllers (their state is one float: the coefficient, kept in TrainState.extra) -----

@dataclasses.dataclass(frozen=True)
class KLController:
    """kind "fixed": the coefficient never changes. kind "adaptive": proportional control towards
    `target_per_reply`, in nats per reply (the batch mean of each reply's summed per-token KL, as
    AlpacaFarm measures it): e = clip(kl / target - 1, -0.2, 0.2), then
    update "alpacafarm": coef *= 1 + k_beta * e;  update "trl": coef *= 1 + e * n_steps / horizon."""

    kind: str = "fixed"
    target_per_reply: float = 6.0
    k_beta: float = 0.1
    horizon: int = 10000
    update_rule: str = "alpacafarm"

    def update(self, coef: float, kl_per_reply: float, n_steps: int = 1) -> float:
        if self.kind == "fixed":
            return coef
        if self.kind != "adaptive":
            raise ValueError(f"KL controller kind must be fixed or adaptive, got {self.kind!r}")
        e = min(max(kl_per_reply / self.target_per_reply - 1.0, -0.2), 0.2)
        if self.update_rule == "alpacafarm":
            return coef * (1.0 + self.k_beta * e)
        if self.update_rule == "trl":
            return coef * (1.0 + e * n_steps / self.horizon)
        raise ValueError(f"KL update rule must be alpacafarm or trl, got {self.update_rule!r}")
