"""The LM head and its cross entropy as one function, in chunks of the sequence.

Next-token loss through `logits = hidden @ kernel` the plain way materialises [B, T, vocab]
float32 logits, their softmax and their gradient (at vocab 32k: 0.5 GB for 4 x 1024 tokens), and
on CPU spends as long transposing and padding that gradient as in the head's matmuls. Here the
forward pass walks the sequence in chunks: each chunk's logits give its loss *and*, since the
loss is a scalar, its gradients (d hidden, and d kernel summed over chunks) right away, so a
chunk's logits die with the chunk. The backward pass only scales those gradients by the
incoming cotangent. Same FLOPs as the plain head (one forward and two gradient matmuls).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from almost_jax.models.layers import constrain

Array = jax.Array


def _chunks(x: Array, n: int) -> Array:
    """[B, T, ...] -> [n, B, T // n, ...]: chunks along the sequence keep the batch axis (and its
    sharding) intact."""
    b, t = x.shape[:2]
    return jnp.moveaxis(x.reshape((b, n, t // n) + x.shape[2:]), 1, 0)


def _unchunk(x: Array) -> Array:
    n, b, c = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape((b, n * c) + x.shape[3:])


def _gathered(kernel: Array) -> Array:
    """The kernel with its embed axis unsharded (vocab stays split over `tensor`): gathered once,
    before the loop over chunks, not once per chunk."""
    return constrain(kernel, (None, "vocab"))


def _chunk_nll(hidden, kernel, targets, dtype):
    """Logits of one chunk [B, C, V] (float32) and each token's -log p(target)."""
    logits = jnp.einsum("bcd,dv->bcv", hidden.astype(dtype), kernel.astype(dtype),
                        preferred_element_type=jnp.float32)
    logits = constrain(logits, ("act_batch", "act_length", "act_vocab"))
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return logits, logz, logz - picked


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def head_cross_entropy(hidden: Array, kernel: Array, targets: Array, weights: Array, num_chunks: int = 1,
                       dtype=jnp.float32) -> Array:
    """sum over tokens of weights * -log softmax(hidden @ kernel)[target], a float32 scalar.

    hidden [B, T, d], kernel [d, V], targets and weights [B, T]; T must split into num_chunks.
    Differentiable in hidden and kernel (weights and targets are data)."""
    kernel = _gathered(kernel)

    def body(total, xs):
        h, t, w = xs
        _, _, nll = _chunk_nll(h, kernel, t, dtype)
        return total + jnp.sum(nll * w), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                            (_chunks(hidden, num_chunks), _chunks(targets, num_chunks), _chunks(weights, num_chunks)))
    return total


def _forward(hidden, kernel, targets, weights, num_chunks, dtype):
    vocab = kernel.shape[-1]
    kernel = _gathered(kernel)

    def body(carry, xs):
        total, d_kernel = carry
        h, t, w = xs
        logits, logz, nll = _chunk_nll(h, kernel, t, dtype)
        w = w.astype(jnp.float32)
        # d(sum w * nll) / d logits = w * (softmax - onehot(target))
        d_logits = (jnp.exp(logits - logz[..., None]) - jax.nn.one_hot(t, vocab, dtype=jnp.float32)) * w[..., None]
        d_logits = d_logits.astype(dtype)
        d_h = jnp.einsum("bcv,dv->bcd", d_logits, kernel.astype(dtype), preferred_element_type=jnp.float32)
        d_kernel = d_kernel + jnp.einsum("bcd,bcv->dv", h.astype(dtype), d_logits, preferred_element_type=jnp.float32)
        return (total + jnp.sum(nll * w), d_kernel), d_h.astype(hidden.dtype)

    init = (jnp.zeros((), jnp.float32), jnp.zeros(kernel.shape, jnp.float32))
    (total, d_kernel), d_hidden = jax.lax.scan(
        body, init, (_chunks(hidden, num_chunks), _chunks(targets, num_chunks), _chunks(weights, num_chunks)))
    return total, (_unchunk(d_hidden), d_kernel.astype(kernel.dtype), targets, weights)


def _backward(num_chunks, dtype, residuals, g):
    d_hidden, d_kernel, targets, weights = residuals
    zero = lambda x: (jnp.zeros_like(x) if jnp.issubdtype(x.dtype, jnp.floating)  # noqa: E731
                      else jnp.zeros(x.shape, jax.dtypes.float0))
    return (g * d_hidden).astype(d_hidden.dtype), (g * d_kernel).astype(d_kernel.dtype), zero(targets), zero(weights)


head_cross_entropy.defvjp(_forward, _backward)


def num_chunks_for(batch: int, length: int, vocab: int, max_logits: int = 2**24) -> int:
    """The fewest sequence chunks (dividing `length`) whose logits hold at most `max_logits`
    floats (64 MB at the default)."""
    for n in range(1, length + 1):
        if length % n == 0 and batch * (length // n) * vocab <= max_logits:
            return n
    return length
