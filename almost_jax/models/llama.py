"""The LLaMA-family trunk and its two heads: LM logits, and a scalar (reward / value) head.

Pure functional: `module.apply({"params": params}, ...)` in, arrays out. The KV cache is an
explicit argument and return value (per-layer (k, v) arrays, or one stacked pair with
scan_layers), never hidden state, so the sampler owns its memory and can donate it to XLA.

Parameter names follow Hugging Face (`model/layers_0/self_attn/q_proj/kernel`), which keeps the
checkpoint conversion a table of transposes and reshapes. With `scan_layers` the decoder layers
are one layer under `nn.scan`: their params are stacked along a leading `layers` axis
(`model/layers/self_attn/q_proj/kernel` [layers, embed, heads, head_dim]); `stack_layers` and
`unstack_layers` convert between the two layouts.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from almost_jax.models.config import LlamaConfig
from almost_jax.models.layers import LINEAR_OUTPUT, DecoderLayer, RMSNorm, constrain, dense_init, take_rows
from almost_jax.models.lm_head import head_cross_entropy, num_chunks_for

Array = jax.Array


def positions_from_mask(attention_mask: Array) -> Array:
    """Position ids for left- or right-padded rows: real tokens count 0, 1, 2, ...; pads get 1
    (like Hugging Face), which is harmless because pads are masked out as keys. Packed rows
    (segment ids > 1) need explicit positions (see data/sft_data.py)."""
    mask = (attention_mask > 0).astype(jnp.int32)
    return jnp.where(mask > 0, jnp.cumsum(mask, axis=-1) - 1, 1)


def last_token_index(attention_mask: Array) -> Array:
    """Index of the last real token of each row, for left *or* right padding."""
    t = attention_mask.shape[-1]
    return t - 1 - jnp.argmax((attention_mask[:, ::-1] > 0).astype(jnp.int32), axis=-1)


def _with_projections(policy):
    """A dot-saving policy that also keeps the projections' outputs (they come out of a custom
    VJP, layers.linear, which the dot policies do not see as dots)."""
    cp = jax.checkpoint_policies
    return cp.save_from_both_policies(policy, cp.save_only_these_names(LINEAR_OUTPUT))


REMAT_POLICY_FNS = {"full": None, "dots_saveable": _with_projections(jax.checkpoint_policies.dots_saveable),
                    "dots_with_no_batch_dims_saveable": _with_projections(
                        jax.checkpoint_policies.dots_with_no_batch_dims_saveable)}


def decoder_layer_class(cfg: LlamaConfig):
    """DecoderLayer, wrapped in nn.remat with the configured policy (see config.REMAT_POLICIES)."""
    if cfg.layer_remat == "none":
        return DecoderLayer
    # Under scan the loop boundary already keeps XLA from merging the recomputation away.
    return nn.remat(DecoderLayer, policy=REMAT_POLICY_FNS[cfg.layer_remat], prevent_cse=not cfg.scan_layers)


def _scan_body(layer, carry, index, positions, kv_mask, query_slots, cache_index):
    x, cache = carry
    x, cache = layer(x, positions, kv_mask, query_slots, cache, cache_index, None if cache is None else index)
    return (x, cache), None


# One layer's code applied num_layers times; params get a leading axis named "layers".
_scan_layers = nn.scan(_scan_body, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                       metadata_params={nn.PARTITION_NAME: "layers"})


class Transformer(nn.Module):
    """Embeddings, decoder layers and the final norm: hidden states [B, T, hidden]."""

    cfg: LlamaConfig

    def setup(self):
        cfg = self.cfg
        self.embed_tokens = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=dense_init(("vocab", "embed")))
        layer_cls = decoder_layer_class(cfg)
        if cfg.scan_layers:
            self.layers = layer_cls(cfg)  # its params are stacked by _scan_layers
        else:
            self.layers = [layer_cls(cfg) for _ in range(cfg.num_layers)]
        self.norm = RMSNorm(cfg.rms_norm_eps, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype))

    def __call__(self, input_ids: Array, attention_mask: Array, positions: Optional[Array] = None,
                 cache: Optional[Sequence] = None, cache_index: Optional[Array] = None,
                 select: Optional[Array] = None):
        """input_ids [B, T]. Without a cache, attention_mask is [B, T] (1 = real token).
        With a cache of S slots, attention_mask is [B, S] over cache slots and the T new tokens
        are written at slots [cache_index, cache_index + T).
        select [B, T']: return hidden states only at these positions of each row; the last
        (unrolled) layer then computes nothing but keys and values at the other positions."""
        if positions is None:
            if cache is not None:
                raise ValueError("positions are required when decoding with a KV cache")
            positions = positions_from_mask(attention_mask)
        t = input_ids.shape[1]
        start = 0 if cache is None else cache_index
        query_slots = start + jnp.arange(t)
        x = constrain(self.embed_tokens(input_ids), ("act_batch", "act_length", "act_embed"))
        if self.cfg.scan_layers:
            (x, cache), _ = _scan_layers(self.layers, (x, cache), jnp.arange(self.cfg.num_layers), positions,
                                         attention_mask, query_slots, start)
            return self.norm(x if select is None else take_rows(x, select)), cache
        new_cache = []
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, layer_cache = layer(x, positions, attention_mask, query_slots,
                                   None if cache is None else cache[i], start, None, select if last else None)
            new_cache.append(layer_cache)
        return self.norm(x), (tuple(new_cache) if cache is not None else None)

    def attend(self, hidden: Array) -> Array:
        return self.embed_tokens.attend(hidden)


class CausalLM(nn.Module):
    """Trunk + LM head (tied to the embeddings when configured). Logits are float32."""

    cfg: LlamaConfig

    def setup(self):
        self.model = Transformer(self.cfg)
        if not self.cfg.tie_word_embeddings:
            self.lm_head = nn.Dense(self.cfg.vocab_size, use_bias=False, dtype=jnp.dtype(self.cfg.dtype),
                                    param_dtype=jnp.dtype(self.cfg.param_dtype),
                                    kernel_init=dense_init(("embed", "vocab")))

    def __call__(self, input_ids, attention_mask, positions=None, cache=None, cache_index=None,
                 last_only: bool = False):
        """last_only: logits for the final position only (a prefill needs nothing else, and
        [B, T, vocab] logits would dominate memory at real scale)."""
        hidden, cache = self.model(input_ids, attention_mask, positions, cache, cache_index)
        if last_only:
            hidden = hidden[:, -1:]
        logits = self.model.attend(hidden) if self.cfg.tie_word_embeddings else self.lm_head(hidden)
        logits = constrain(logits.astype(jnp.float32), ("act_batch", "act_length", "act_vocab"))
        return logits, cache

    def token_loss(self, input_ids, attention_mask, targets, weights, positions=None, num_chunks: int = 0):
        """sum(weights * -log p(targets)) over [B, T] through the chunked head (models.lm_head),
        never holding all [B, T, vocab] logits; num_chunks 0 picks it from the shapes."""
        hidden, _ = self.model(input_ids, attention_mask, positions)
        if self.cfg.tie_word_embeddings:
            kernel = self.model.embed_tokens.embedding.T
        else:
            kernel = self.lm_head.variables["params"]["kernel"]
        b, t = targets.shape
        n = num_chunks or num_chunks_for(b, t, self.cfg.vocab_size)
        return head_cross_entropy(hidden, kernel, targets, weights, n, jnp.dtype(self.cfg.dtype))


class ScalarHeadModel(nn.Module):
    """Trunk + a bias-free linear head to one scalar per token: a reward model or a value model.

    `reduce="last"` reads the score at the last real token (ALMoST reads it at the appended EOS,
    which is the last real token of a right-padded row); `reduce="none"` returns per-token values.
    """

    cfg: LlamaConfig
    head_init_std: float = 0.02  # 0.0 gives AlpacaFarm's zero-initialised value head

    def setup(self):
        init = (nn.initializers.zeros if self.head_init_std == 0 else nn.initializers.normal(self.head_init_std))
        self.model = Transformer(self.cfg)
        self.score_head = nn.Dense(1, use_bias=False, dtype=jnp.float32, param_dtype=jnp.dtype(self.cfg.param_dtype),
                                   kernel_init=nn.with_logical_partitioning(init, ("embed", None)))

    def __call__(self, input_ids, attention_mask, positions=None, reduce: str = "last"):
        if reduce not in ("last", "none"):
            raise ValueError(f"reduce must be 'last' or 'none', got {reduce!r}")
        select = last_token_index(attention_mask)[:, None] if reduce == "last" else None
        hidden, _ = self.model(input_ids, attention_mask, positions, select=select)
        scores = self.score_head(hidden.astype(jnp.float32))[..., 0]  # [B, T] or [B, 1]
        return scores if reduce == "none" else scores[:, 0]


def build_model(cfg: LlamaConfig, head: str = "lm", **kwargs) -> nn.Module:
    if head == "lm":
        return CausalLM(cfg)
    if head == "scalar":
        return ScalarHeadModel(cfg, **kwargs)
    raise ValueError(f"unknown head {head!r} (expected 'lm' or 'scalar')")


def init_params(cfg: LlamaConfig, rng: Array, head: str = "lm", **kwargs):
    """Randomly initialised parameters (unboxed), for tests and training from scratch."""
    from almost_jax.parallel.shard import unbox
    return unbox(abstract_or_init(cfg, rng, head, abstract=False, **kwargs))


def abstract_or_init(cfg: LlamaConfig, rng: Array, head: str = "lm", abstract: bool = True, **kwargs):
    """Boxed params (with logical axis metadata); abstract ShapeDtypeStructs when `abstract`."""
    model = build_model(cfg, head, **kwargs)
    ids = jnp.zeros((1, 2), jnp.int32)
    fn = lambda r: model.init(r, ids, jnp.ones_like(ids))["params"]  # noqa: E731
    return jax.eval_shape(fn, rng) if abstract else fn(rng)


def param_shardings(cfg: LlamaConfig, mesh, rules, head: str = "lm", **kwargs):
    """NamedShardings of a model's params on `mesh` under the logical rules (no weights made)."""
    from almost_jax.parallel.shard import logical_shardings
    return logical_shardings(abstract_or_init(cfg, jax.random.key(0), head, **kwargs), mesh, rules)


def init_cache(cfg: LlamaConfig, batch: int, length: int, dtype=None) -> tuple:
    """A zeroed KV cache: per layer (k, v) of shape [batch, kv_heads, length, head_dim]; with
    scanned layers one (k, v) pair of shape [batch, layers, kv_heads, length, head_dim]."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    if cfg.scan_layers:
        shape = (batch, cfg.num_layers, cfg.kv_heads, length, cfg.dim_per_head)
        return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
    shape = (batch, cfg.kv_heads, length, cfg.dim_per_head)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_layers))


# ----- the two parameter layouts -----

def layers_are_stacked(params: dict) -> bool:
    """Whether a model's params (a tree with a "model" trunk) use the scanned layout."""
    return "layers" in params["model"]


def stack_layers(params: dict) -> dict:
    """Unrolled params (`model/layers_{i}/...`) -> scanned (`model/layers/...`, leading layers axis)."""
    trunk = dict(params["model"])
    n = sum(1 for k in trunk if k.startswith("layers_"))
    layers = [trunk.pop(f"layers_{i}") for i in range(n)]
    trunk["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return {**params, "model": trunk}


def unstack_layers(params: dict) -> dict:
    """Scanned params -> unrolled (one subtree per layer)."""
    trunk = dict(params["model"])
    stacked = trunk.pop("layers")
    n = jax.tree.leaves(stacked)[0].shape[0]
    trunk.update({f"layers_{i}": jax.tree.map(lambda x: x[i], stacked) for i in range(n)})
    return {**params, "model": trunk}
