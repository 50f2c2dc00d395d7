"""Causal-LM loss with a per-token loss mask: pretraining (all tokens) and SFT (assistant tokens)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target_t | prefix) for each position; logits [B, T, V], targets [B, T]."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - logz


def masked_lm_loss(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array):
    """Next-token cross entropy averaged over positions whose *target* token has loss_mask = 1.

    loss_mask[b, t] = 1 means token t is trained on (predicted from tokens < t).
    Returns (mean loss, number of target tokens).
    """
    targets = input_ids[:, 1:]
    weights = loss_mask[:, 1:].astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], targets)
    count = jnp.sum(weights)
    return jnp.sum(nll * weights) / jnp.maximum(count, 1.0), count


def next_token_targets(input_ids: jax.Array, loss_mask: jax.Array):
    """(targets, weights) [B, T] aligned with the positions that predict them: position t predicts
    token t+1 with that token's loss_mask; the last position predicts nothing (weight 0)."""
    pad = jnp.zeros_like(input_ids[:, :1])
    targets = jnp.concatenate([input_ids[:, 1:], pad], axis=1)
    weights = jnp.concatenate([loss_mask[:, 1:], pad], axis=1).astype(jnp.float32)
    return targets, weights


def make_lm_loss(model):
    """loss_fn(params, batch, rng) for the shared train step; batch has input_ids, attention_mask,
    loss_mask (all [B, T]) and, for packed rows, positions (attention_mask then holds segment ids).
    The same loss as `masked_lm_loss`, through the model's chunked LM head (CausalLM.token_loss),
    which never holds [B, T, vocab] logits or their gradient."""
    def loss_fn(params, batch, rng):
        del rng
        targets, weights = next_token_targets(batch["input_ids"], batch["loss_mask"])
        total = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], targets, weights,
                            batch.get("positions"), method="token_loss")
        count = jnp.sum(weights)
        return total / jnp.maximum(count, 1.0), {"target_tokens": count}

    return loss_fn
