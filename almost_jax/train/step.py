"""The one jitted train step every learner reuses: loss -> grads (accumulated) -> optax update.

A learner supplies only `loss_fn(params, batch, rng) -> (loss, metrics)`. Gradient accumulation
splits the batch into `grad_accum_steps` equal micro-batches and scans over them, so the
per-device activation memory is that of one micro-batch; the update equals that of the full
batch when the loss is a mean over equally sized micro-batches.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from almost_jax.train.state import TrainState

LossFn = Callable[..., tuple[jax.Array, dict]]


def _split_micro(batch, n: int):
    def split(x):
        if x.shape[0] % n:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into grad_accum_steps={n} micro-batches")
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])
    return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn: LossFn, params, batch, rng, grad_accum_steps: int = 1):
    """Mean loss, grads and metrics over micro-batches."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
        (loss, metrics), grads = grad_fn(params, batch, rng)
        return loss, grads, metrics

    micro = _split_micro(batch, grad_accum_steps)
    rngs = jax.random.split(rng, grad_accum_steps)

    def body(carry, xs):
        mb, r = xs
        (loss, metrics), grads = grad_fn(params, mb, r)
        acc = jax.tree.map(jnp.add, carry, (loss, grads, metrics))
        return acc, None

    zero_metrics = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro), rngs[0])[0][1])
    init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero_metrics))
    (loss, grads, metrics), _ = jax.lax.scan(body, init, (micro, rngs))
    scale = 1.0 / grad_accum_steps
    return loss * scale, jax.tree.map(lambda g: g * scale, grads), jax.tree.map(lambda m: m * scale, metrics)


def train_step(state: TrainState, batch, loss_fn: LossFn, schedule=None, grad_accum_steps: int = 1):
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    loss, grads, metrics = accumulate_gradients(loss_fn, state.params, batch, step_rng, grad_accum_steps)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads))
    if schedule is not None:
        metrics["lr"] = schedule(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              rng=jax.random.key_data(rng))
    return new_state, metrics


def make_train_step(loss_fn: LossFn, state_shardings, batch_shardings, schedule=None, grad_accum_steps: int = 1):
    """jit with explicit in/out shardings; the old state's buffers are donated."""
    def step(state, batch):
        return train_step(state, batch, loss_fn, schedule, grad_accum_steps)

    return jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, None), donate_argnums=(0,))


def make_eval_step(metrics_fn: Callable, param_shardings, batch_shardings):
    return jax.jit(metrics_fn, in_shardings=(param_shardings, batch_shardings))
