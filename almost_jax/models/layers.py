"""Building blocks of a LLaMA-family decoder: RMSNorm, rotary embeddings, GQA attention, SwiGLU.

Every parameter carries logical axis names (see `almost_jax/parallel/rules.py`); activations are
pinned with logical constraints, so the mesh layout is a config edit, never a model edit.
Rotary embeddings use the Hugging Face "rotate-half" layout, so HF q/k weights load unpermuted.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from almost_jax.models.config import LlamaConfig

Array = jax.Array
KVCache = tuple  # per layer: (k [B, kv_heads, S, head_dim], v [B, kv_heads, S, head_dim])


def dense_init(axes, stddev=0.02):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


class Projection(nn.Module):
    """A bias-free linear map whose kernel keeps its N-d shape, e.g. [embed, heads, head_dim].

    (flax's DenseGeneral initialises a flat kernel and reshapes it, which breaks logical
    sharding constraints on the kernel under a mesh.)
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
        return jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.in_dims)


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
    examples never attend to each other.
    """
    key_slots = jnp.arange(kv_mask.shape[-1])
    causal = key_slots[None, :] <= query_slots[:, None]  # [T, S]
    q_seg = jnp.take(kv_mask, query_slots, axis=1)  # [B, T]
    same = (q_seg[:, :, None] == kv_mask[:, None, :]) & (kv_mask[:, None, :] > 0)
    return (causal[None] & same)[:, None, None]


class Attention(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x, positions, kv_mask, query_slots, cache: Optional[KVCache], cache_index):
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        h, kvh, d = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head

        def proj(name, heads, axes):
            return Projection((heads, d), ("embed",) + axes, 1, dtype, pdtype, name=name)(x)

        q = proj("q_proj", h, ("heads", "head_dim"))
        k = proj("k_proj", kvh, ("kv_heads", "head_dim"))
        v = proj("v_proj", kvh, ("kv_heads", "head_dim"))
        cos_sin = rotary(cfg, positions, dtype)
        q = constrain(apply_rotary(q, cos_sin), ("act_batch", "act_length", "act_heads", None))
        k = apply_rotary(k, cos_sin)

        mask = attention_mask(query_slots, kv_mask)  # [B, 1, 1, T, S]
        b, t = q.shape[:2]
        if cfg.attention_impl == "cudnn" and cache is None:
            out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, 0], implementation="cudnn")
        else:
            # Keys/values head-major [B, kv_heads, S, d]: the layout both attention matmuls read,
            # so a decode step never transposes the whole cache (it only writes T new slots).
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
            if cache is not None:  # write this step's keys/values into the preallocated cache
                ck, cv = cache
                k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, 0, cache_index, 0))
                v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, 0, cache_index, 0))
                cache = (k, v)
            k = constrain(k, ("act_batch", "act_kv_heads", "act_kv_length", None))
            v = constrain(v, ("act_batch", "act_kv_heads", "act_kv_length", None))
            qg = q.reshape(b, t, kvh, h // kvh, d)
            scores = jnp.einsum("btkgd,bksd->bkgts", qg, k.astype(dtype)).astype(jnp.float32)
            scores = scores / math.sqrt(d)
            scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
            out = jnp.einsum("bkgts,bksd->btkgd", probs, v.astype(dtype)).reshape(b, t, h, d)
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
            return nn.Dense(features, use_bias=False, dtype=dtype, param_dtype=pdtype,
                            kernel_init=dense_init(axes), name=name)(inp)

        gate = dense("gate_proj", cfg.intermediate_size, ("embed", "mlp"), x)
        up = dense("up_proj", cfg.intermediate_size, ("embed", "mlp"), x)
        hidden = constrain(nn.silu(gate) * up, ("act_batch", "act_length", "act_mlp"))
        return dense("down_proj", cfg.hidden_size, ("mlp", "embed"), hidden)


class DecoderLayer(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x, positions, kv_mask, query_slots, cache, cache_index):
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, dtype, pdtype, name=name)  # noqa: E731
        attn_out, cache = Attention(cfg, name="self_attn")(
            norm("input_layernorm")(x), positions, kv_mask, query_slots, cache, cache_index)
        x = x + attn_out
        x = x + MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
        return constrain(x, ("act_batch", "act_length", "act_embed")), cache
