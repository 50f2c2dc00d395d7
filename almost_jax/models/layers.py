"""Building blocks of a LLaMA-family decoder: RMSNorm, rotary embeddings, GQA attention, SwiGLU.

Every parameter carries logical axis names (see `almost_jax/parallel/rules.py`); activations are
pinned with logical constraints, so the mesh layout is a config edit, never a model edit.
Rotary embeddings use the Hugging Face "rotate-half" layout, so HF q/k weights load unpermuted.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from almost_jax.models.config import LlamaConfig

Array = jax.Array
# A layer's (k, v), each [B, kv_heads, S, head_dim]; with scanned layers one (k, v) pair for the
# whole stack, each [B, layers, kv_heads, S, head_dim] (batch first, like every other array).
KVCache = tuple


def dense_init(axes, stddev=0.02):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


LINEAR_OUTPUT = "linear_output"  # checkpoint name of every projection's output (see llama.REMAT_POLICY_FNS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def linear(x: Array, kernel: Array, in_dims: int) -> Array:
    """x [..., *in] . kernel [*in, *out] -> [..., *out], with its own VJP.

    JAX's generic rule computes a kernel's gradient transposed (dy^T x) and then transposes it,
    which XLA on CPU turns into a strided copy of every [tokens, features] output gradient (a
    tenth of a train step at d=256-768). Here the kernel's gradient is one dot_general in the
    kernel's own layout (x^T dy), as a hand-written backward would do.
    """
    return jnp.tensordot(x, kernel, axes=in_dims)


def _linear_fwd(x, kernel, in_dims):
    return linear(x, kernel, in_dims), (x, kernel)


def _linear_bwd(in_dims, residuals, dy):
    x, kernel = residuals
    batch, out = x.ndim - in_dims, kernel.ndim - in_dims
    dx = jnp.tensordot(dy, kernel, axes=(tuple(range(batch, batch + out)), tuple(range(in_dims, kernel.ndim))))
    dkernel = jnp.tensordot(x, dy, axes=(tuple(range(batch)), tuple(range(batch))))
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


linear.defvjp(_linear_fwd, _linear_bwd)


class Projection(nn.Module):
    """A bias-free linear map whose kernel keeps its N-d shape, e.g. [embed, heads, head_dim].

    (flax's DenseGeneral initialises a flat kernel and reshapes it, which breaks logical
    sharding constraints on the kernel under a mesh.) The output is named LINEAR_OUTPUT for
    remat policies that keep matmul results.
    """

    out_shape: tuple
    axes: tuple  # logical names of the kernel: input dims then output dims
    in_dims: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = tuple(x.shape[-self.in_dims:]) + tuple(self.out_shape)
        kernel = self.param("kernel", dense_init(self.axes), shape, self.param_dtype)
        y = linear(x.astype(self.dtype), kernel.astype(self.dtype), self.in_dims)
        return checkpoint_name(y, LINEAR_OUTPUT)


def constrain(x: Array, axes: tuple) -> Array:
    """Pin an activation to logical axes; a no-op when no mesh/rules are active."""
    return nn.with_logical_constraint(x, axes)


class RMSNorm(nn.Module):
    eps: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * normed.astype(self.dtype)


def rope_inverse_frequencies(cfg: LlamaConfig, positions: Optional[Array] = None) -> Array:
    """Per-pair rotary frequencies [D/2], with the configured `rope_scaling` (Hugging Face's
    formulas, modeling_rope_utils). Dynamic NTK depends on the sequence length, so it needs the
    `positions` [B, T] and returns [B, 1, D/2]: each row uses its own length (max position + 1),
    so a row's result never depends on the rows batched with it. (transformers takes the
    batch's longest row, and keeps the longest length seen so far; the same for one row or a
    freshly loaded model.)"""
    dim = cfg.dim_per_head
    exponents = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim
    inv_freq = 1.0 / (cfg.rope_theta ** exponents)
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    if s.rope_type == "linear":
        return inv_freq / s.factor
    if s.rope_type == "dynamic":
        if positions is None:
            raise ValueError("dynamic rope scaling needs the positions (it depends on the sequence length)")
        original = s.original_max_position_embeddings
        length = jnp.maximum(jnp.max(positions, axis=-1).astype(jnp.float32) + 1.0, float(original))  # [B]
        base = cfg.rope_theta * ((s.factor * length / original) - (s.factor - 1)) ** (dim / (dim - 2))
        return (1.0 / (base[:, None] ** exponents[None, :]))[:, None, :]
    if s.rope_type == "yarn":
        return _yarn_inverse_frequencies(cfg)
    # llama3
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


def _yarn_inverse_frequencies(cfg: LlamaConfig) -> Array:
    """YaRN: dimensions that turn fewer than `beta_slow` times over the original context are
    interpolated (divided by factor), those turning more than `beta_fast` times keep their
    frequency, with a linear ramp between."""
    s, dim, base = cfg.rope_scaling, cfg.dim_per_head, cfg.rope_theta

    def correction_dim(rotations):
        return dim * math.log(s.original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # no zero-width ramp
    pos_freqs = base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    ramp = jnp.clip((jnp.arange(dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    return (1.0 / (s.factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation


def rope_attention_factor(cfg: LlamaConfig) -> float:
    """YaRN's scale on cos and sin (a softmax temperature); 1 for every other rope type."""
    s = cfg.rope_scaling
    if s is None or s.rope_type != "yarn":
        return 1.0
    if s.attention_factor is not None:
        return s.attention_factor

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if s.mscale and s.mscale_all_dim:
        return mscale(s.factor, s.mscale) / mscale(s.factor, s.mscale_all_dim)
    return mscale(s.factor)


def rotary(cfg: LlamaConfig, positions: Array, dtype) -> tuple[Array, Array]:
    """(cos, sin) [B, T, 1, head_dim] for `positions` [B, T] (per row, so left padding is exact)."""
    inv_freq = rope_inverse_frequencies(cfg, positions)
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    scale = rope_attention_factor(cfg)
    return (jnp.cos(angles) * scale).astype(dtype), (jnp.sin(angles) * scale).astype(dtype)


def apply_rotary(x: Array, cos_sin: tuple[Array, Array]) -> Array:
    """x: [B, T, heads, head_dim] rotated in the rotate-half layout."""
    cos, sin = cos_sin
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def attention_mask(query_slots: Array, kv_mask: Array) -> Array:
    """Causal + padding (+ packing) mask [B, 1, 1, T, S].

    kv_mask [B, S] holds 0 for padding and a segment id > 0 for real tokens (plain 0/1 masks are
    the one-segment case): a query in slot i sees key slots j <= i of its own segment, so packed
    examples never attend to each other. query_slots: [T] for every row, or [B, T] per row.
    """
    key_slots = jnp.arange(kv_mask.shape[-1])
    slots = jnp.broadcast_to(query_slots, kv_mask.shape[:1] + query_slots.shape[-1:])  # [B, T]
    causal = key_slots[None, None, :] <= slots[:, :, None]  # [B, T, S]
    q_seg = jnp.take_along_axis(kv_mask, slots, axis=1)  # [B, T]
    same = (q_seg[:, :, None] == kv_mask[:, None, :]) & (kv_mask[:, None, :] > 0)
    return (causal & same)[:, None, None]


def write_cache(cache: KVCache, k: Array, v: Array, cache_index, layer=None):
    """Write T new keys/values [B, kv_heads, T, d] at slot `cache_index`; return the updated cache
    and this layer's full keys/values. With a stacked cache `layer` picks the layer; only the new
    slots are written, so the (loop-carried) cache is updated in place."""
    ck, cv = cache
    if layer is None:
        ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, 0, cache_index, 0))
        cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, 0, cache_index, 0))
        return (ck, cv), ck, cv
    at = (0, layer, 0, cache_index, 0)
    ck = jax.lax.dynamic_update_slice(ck, k[:, None].astype(ck.dtype), at)
    cv = jax.lax.dynamic_update_slice(cv, v[:, None].astype(cv.dtype), at)
    read = lambda c: jax.lax.dynamic_index_in_dim(c, layer, axis=1, keepdims=False)  # noqa: E731
    return (ck, cv), read(ck), read(cv)


def _grouped_scores(qg: Array, k: Array) -> Array:
    """Unmasked scores q k^T / sqrt(d) in float32: qg [B, T, kv_heads, groups, d], k
    [B, kv_heads, S, d] -> [B, kv_heads, groups, T, S]."""
    scores = jnp.einsum("btkgd,bksd->bkgts", qg, k).astype(jnp.float32)
    return scores / math.sqrt(qg.shape[-1])


def _softmax_stats(q: Array, k: Array, v: Array, mask: Array):
    """The forward pass: the output [B, T, heads, d] and the row statistics the backward pass
    needs to rebuild the probabilities (row max and 1 / row sum, each [B, kv_heads, groups, T, 1])."""
    b, t, h, d = q.shape
    kvh = k.shape[1]
    qg = q.reshape(b, t, kvh, h // kvh, d)
    scores = jnp.where(mask, _grouped_scores(qg, k), jnp.finfo(jnp.float32).min)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    unnormalised = jnp.where(mask, jnp.exp(scores - row_max), 0.0)
    row_sum = jnp.sum(unnormalised, axis=-1, keepdims=True)
    inv_sum = 1.0 / jnp.where(row_sum > 0, row_sum, 1.0)  # a row that sees no key: weights 0
    probs = (unnormalised * inv_sum).astype(q.dtype)
    out = jnp.einsum("bkgts,bksd->btkgd", probs, v).reshape(b, t, h, d)
    return out, (row_max, inv_sum)


def attention_autodiff(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """softmax(q k^T / sqrt(d), masked) v for grouped heads: q [B, T, heads, d], k and v
    [B, kv_heads, S, d] (head-major), mask [B, 1, 1, T, S] -> [B, T, heads, d]. Scores and
    softmax in float32; a query that sees no key (a padding slot) gets zeros. Differentiated by
    JAX (attention_impl="xla_autodiff"); the reference for attention_core."""
    return _softmax_stats(q, k, v, mask)[0]


@jax.custom_vjp
def attention_core(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """attention_autodiff's forward pass with its own VJP (attention_impl="xla", the default).

    The VJP keeps, for the backward pass, only q, k, v, the output and two numbers per query
    row, not the [T, S] probabilities: it rebuilds them from the row statistics, and takes the
    softmax's row term sum_s P dP from the output instead (dO . O, a [T, d] reduction). Autodiff
    would save the probabilities of every layer (the largest residual of a train step at T=512)
    and reduce P * dP over [T, S] in the layout of the transposed matmul, the single slowest op
    of the CPU train step (bench/train.py --profile)."""
    return _softmax_stats(q, k, v, mask)[0]


def _attention_fwd(q, k, v, mask):
    out, stats = _softmax_stats(q, k, v, mask)
    return out, (q, k, v, mask, out, stats)


def _attention_bwd(residuals, d_out):
    q, k, v, mask, out, (row_max, inv_sum) = residuals
    b, t, h, d = q.shape
    kvh = k.shape[1]
    qg = q.reshape(b, t, kvh, h // kvh, d)
    d_out = d_out.reshape(qg.shape)
    # [B, kv_heads, groups, T, S] in float32, as the forward pass had them
    probs = jnp.where(mask, jnp.exp(_grouped_scores(qg, k) - row_max), 0.0) * inv_sum
    d_v = jnp.einsum("bkgts,btkgd->bksd", probs.astype(v.dtype), d_out)
    d_probs = jnp.einsum("btkgd,bksd->bkgts", d_out, v).astype(jnp.float32)
    row_term = jnp.einsum("btkgd,btkgd->bkgt", d_out.astype(jnp.float32),
                          out.reshape(qg.shape).astype(jnp.float32))[..., None]  # = sum_s P dP
    d_scores = (probs * (d_probs - row_term) / math.sqrt(d)).astype(q.dtype)
    d_q = jnp.einsum("bkgts,bksd->btkgd", d_scores, k).reshape(b, t, h, d)
    d_k = jnp.einsum("bkgts,btkgd->bksd", d_scores, qg)
    return d_q, d_k.astype(k.dtype), d_v.astype(v.dtype), None


attention_core.defvjp(_attention_fwd, _attention_bwd)


# Query block of causal_attention: 1.9x faster attention forward + backward than one block at 4x512,
# 12 heads, fp32 on this project's 2-core CPU (64: the same, 256: 1.6x).
CAUSAL_QUERY_BLOCK = 128


def causal_attention(q: Array, k: Array, v: Array, mask: Array, block: int = CAUSAL_QUERY_BLOCK) -> Array:
    """attention_core for a pass without a cache (training, scoring): queries at slots 0..T-1 over
    keys at the same slots, so the causal mask hides every key after a query. In query blocks:
    block i reads keys [0, end of block i) only, which skips the masked upper triangle of the
    [T, S] scores (~half the attention work at many blocks) and keeps each block's scores small.
    Exactly attention_core's result (a query's hidden keys have weight 0 either way)."""
    t = q.shape[1]
    if t <= block:
        return attention_core(q, k, v, mask)
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        outs.append(attention_core(q[:, start:end], k[:, :, :end], v[:, :, :end], mask[..., start:end, :end]))
    return jnp.concatenate(outs, axis=1)


def take_rows(x: Array, index: Array) -> Array:
    """x [B, T, ...] at per-row positions index [B, T'] -> [B, T', ...]."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class Attention(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x, positions, kv_mask, query_slots, cache: Optional[KVCache], cache_index, layer=None,
                 select=None):
        """select [B, T']: compute queries (and outputs) only at these positions of each row; keys
        and values still come from every position (a reward model reads one position)."""
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        h, kvh, d = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head

        def proj(name, heads, axes, inp):
            return Projection((heads, d), ("embed",) + axes, 1, dtype, pdtype, name=name)(inp)

        cos_sin = rotary(cfg, positions, dtype)  # from every position: dynamic NTK reads the row's length
        q_cos_sin = cos_sin
        if select is not None:
            q_cos_sin, query_slots = tuple(take_rows(c, select) for c in cos_sin), select
        q = proj("q_proj", h, ("heads", "head_dim"), x if select is None else take_rows(x, select))
        k = proj("k_proj", kvh, ("kv_heads", "head_dim"), x)
        v = proj("v_proj", kvh, ("kv_heads", "head_dim"), x)
        q = constrain(apply_rotary(q, q_cos_sin), ("act_batch", "act_length", "act_heads", None))
        k = apply_rotary(k, cos_sin)

        mask = attention_mask(query_slots, kv_mask)  # [B, 1, 1, T, S]
        if cfg.attention_impl == "cudnn" and cache is None:
            out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, 0], implementation="cudnn")
        else:
            # Keys/values head-major [B, kv_heads, S, d]: the layout both attention matmuls read,
            # so a decode step never transposes the whole cache (it only writes T new slots).
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
            if cache is not None:  # write this step's keys/values into the preallocated cache
                cache, k, v = write_cache(cache, k, v, cache_index, layer)
            k = constrain(k, ("act_batch", "act_kv_heads", "act_kv_length", None))
            v = constrain(v, ("act_batch", "act_kv_heads", "act_kv_length", None))
            if cfg.attention_impl == "xla_autodiff":
                core = attention_autodiff
            else:  # with neither a cache nor selected queries, query and key slots are the same 0..T-1
                core = causal_attention if cache is None and select is None else attention_core
            out = core(q, k.astype(dtype), v.astype(dtype), mask)
        out = constrain(out, ("act_batch", "act_length", "act_heads", None))
        y = Projection((cfg.hidden_size,), ("heads", "head_dim", "embed"), 2, dtype, pdtype, name="o_proj")(out)
        return y, cache


class MLP(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def dense(name, features, axes, inp):
            return Projection((features,), axes, 1, dtype, pdtype, name=name)(inp)

        gate = dense("gate_proj", cfg.intermediate_size, ("embed", "mlp"), x)
        up = dense("up_proj", cfg.intermediate_size, ("embed", "mlp"), x)
        hidden = constrain(nn.silu(gate) * up, ("act_batch", "act_length", "act_mlp"))
        return dense("down_proj", cfg.hidden_size, ("mlp", "embed"), hidden)


class DecoderLayer(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x, positions, kv_mask, query_slots, cache, cache_index, layer=None, select=None):
        """select [B, T']: the output only at these positions (see Attention)."""
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, dtype, pdtype, name=name)  # noqa: E731
        attn_out, cache = Attention(cfg, name="self_attn")(
            norm("input_layernorm")(x), positions, kv_mask, query_slots, cache, cache_index, layer, select)
        x = (x if select is None else take_rows(x, select)) + attn_out
        x = x + MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
        return constrain(x, ("act_batch", "act_length", "act_embed")), cache
