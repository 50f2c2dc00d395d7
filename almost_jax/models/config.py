"""LLaMA-family architecture description and named size presets.

One frozen dataclass describes every LLaMA generation (1, 2, 3.x): the differences are only
grouped KV heads, the rotary base and the `rope_scaling` block (LLaMA-3.x, linear, dynamic NTK,
YaRN). It converts to and
from a Hugging Face `config.json` so checkpoints carry their own architecture.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

SUPPORTED_HF_ARCHITECTURES = ("LlamaForCausalLM",)
SUPPORTED_HF_MODEL_TYPES = ("llama",)
# Per decoder layer, what the forward pass keeps for the backward pass: everything ("none": no
# rematerialisation), only matmul outputs ("dots_saveable"), only matmuls without batch dims
# (projections, not attention scores), or only the layer's input ("full": recompute the layer).
REMAT_POLICIES = ("none", "dots_saveable", "dots_with_no_batch_dims_saveable", "full")
ATTENTION_IMPLS = ("xla", "xla_autodiff", "cudnn")  # see LlamaConfig.attention_impl


ROPE_TYPES = ("llama3", "linear", "dynamic", "yarn")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Rotary scaling for contexts past the pretraining length, as Hugging Face's `rope_scaling`
    (`rope_type`) describes it; the formulas are in `layers.rope_inverse_frequencies`.

    llama3:  LLaMA-3.1's wavelength-dependent interpolation (factor, low/high_freq_factor,
             original_max_position_embeddings).
    linear:  positions divided by `factor` (position interpolation).
    dynamic: NTK-aware base growth once a sequence is longer than
             original_max_position_embeddings (transformers: the config's max_position_embeddings).
    yarn:    NTK-by-parts interpolation (beta_fast / beta_slow) and an attention temperature
             (`attention_factor`, by default 0.1 ln(factor) + 1, or from mscale / mscale_all_dim)
             that scales cos and sin.
    """

    rope_type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: Optional[float] = None
    mscale: Optional[float] = None
    mscale_all_dim: Optional[float] = None
    truncate: bool = True

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"unsupported rope_scaling type {self.rope_type!r} (supported: default, "
                             f"{', '.join(ROPE_TYPES)})")

    @classmethod
    def from_hf(cls, scaling: Mapping[str, Any], max_position_embeddings: int) -> Optional["RopeScaling"]:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            return None
        if kind not in ROPE_TYPES:
            raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: default, {', '.join(ROPE_TYPES)})")
        if kind != "yarn" and scaling.get("factor") is None:
            raise ValueError(f"rope_scaling of type {kind!r} needs a factor: {dict(scaling)}")
        original = scaling.get("original_max_position_embeddings")
        if kind == "dynamic" or original is None:
            original = max_position_embeddings  # what transformers compares the length with
        factor = scaling.get("factor")
        if factor is None:  # yarn without a factor: the context extension ratio (transformers' rule)
            factor = max_position_embeddings / original
        fields = dict(rope_type=kind, factor=float(factor), original_max_position_embeddings=int(original))
        if kind == "llama3":
            fields.update(low_freq_factor=float(scaling["low_freq_factor"]),
                          high_freq_factor=float(scaling["high_freq_factor"]))
        if kind == "yarn":
            opt = lambda k: None if scaling.get(k) is None else float(scaling[k])  # noqa: E731
            fields.update(beta_fast=float(scaling.get("beta_fast") or 32.0), beta_slow=float(scaling.get("beta_slow") or 1.0),
                          attention_factor=opt("attention_factor"), mscale=opt("mscale"),
                          mscale_all_dim=opt("mscale_all_dim"), truncate=bool(scaling.get("truncate", True)))
        return cls(**fields)

    def to_hf(self) -> dict:
        out = {"rope_type": self.rope_type, "factor": self.factor}
        if self.rope_type == "llama3":
            out.update(low_freq_factor=self.low_freq_factor, high_freq_factor=self.high_freq_factor,
                       original_max_position_embeddings=self.original_max_position_embeddings)
        elif self.rope_type == "yarn":
            out.update(original_max_position_embeddings=self.original_max_position_embeddings,
                       beta_fast=self.beta_fast, beta_slow=self.beta_slow, truncate=self.truncate)
            out.update({k: getattr(self, k) for k in ("attention_factor", "mscale", "mscale_all_dim")
                        if getattr(self, k) is not None})
        return out


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: Optional[int] = None  # None = multi-head attention (LLaMA-1/2 7B/13B)
    head_dim: Optional[int] = None  # None = hidden_size // num_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Optional[RopeScaling] = None
    tie_word_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    # Numerics and memory; not part of the architecture (never written to config.json).
    dtype: str = "float32"  # compute dtype of activations, e.g. "bfloat16"
    param_dtype: str = "float32"  # storage dtype of parameters
    # What each decoder layer keeps for the backward pass (see REMAT_POLICIES); `remat=True` is the
    # older spelling of remat_policy="full" and still works.
    remat_policy: str = "none"
    remat: bool = False
    # One decoder layer under jax.lax.scan over stacked params (a leading `layers` axis): compile
    # time independent of depth. Off = a Python loop of distinct layers.
    scan_layers: bool = False
    # "xla": einsum softmax with its own backward pass (layers.attention_core, no [T, S] residual);
    # "xla_autodiff": the same forward differentiated by JAX; "cudnn": jax.nn.dot_product_attention.
    attention_impl: str = "xla"

    def __post_init__(self):
        kv = self.kv_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={kv}")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")

    @property
    def layer_remat(self) -> str:
        """The remat policy in force: remat_policy, or "full" for the older `remat=True`."""
        return "full" if self.remat and self.remat_policy == "none" else self.remat_policy

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def replace(self, **changes) -> "LlamaConfig":
        if isinstance(changes.get("rope_scaling"), Mapping):
            changes["rope_scaling"] = RopeScaling(**changes["rope_scaling"])
        return dataclasses.replace(self, **changes)

    def num_params(self, include_embeddings: bool = True) -> int:
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        h = self.dim_per_head
        attn = d * h * (self.num_heads * 2 + self.kv_heads * 2)
        layer = attn + 3 * d * f + 2 * d
        emb = v * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + d + (emb if include_embeddings else 0)

    # ----- Hugging Face config.json -----
    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "LlamaConfig":
        archs = hf.get("architectures") or []
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_HF_MODEL_TYPES and not set(archs) & set(SUPPORTED_HF_ARCHITECTURES):
            raise ValueError(
                f"unsupported architecture: model_type={model_type!r}, architectures={archs}; "
                f"almost_jax converts {SUPPORTED_HF_ARCHITECTURES} (model_type 'llama')")
        scaling = hf.get("rope_scaling") or hf.get("rope_parameters")
        rope_scaling = None
        rope_theta = hf.get("rope_theta", 10000.0)
        if scaling:
            rope_theta = scaling.get("rope_theta", rope_theta)
            rope_scaling = RopeScaling.from_hf(scaling, hf.get("max_position_embeddings", 2048))
        eos = hf.get("eos_token_id", 2)
        if isinstance(eos, (list, tuple)):
            eos = eos[0]
        pad = hf.get("pad_token_id")
        cfg = cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            num_kv_heads=hf.get("num_key_value_heads"),
            head_dim=hf.get("head_dim"),
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id", 1) if hf.get("bos_token_id") is not None else 1,
            eos_token_id=eos if eos is not None else 2,
            pad_token_id=pad if pad is not None else 0,
        )
        return cfg.replace(**overrides) if overrides else cfg

    def to_hf(self) -> dict:
        out = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.dim_per_head,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "float32" if self.param_dtype == "float32" else "bfloat16",
        }
        if self.rope_scaling is not None:
            out["rope_scaling"] = self.rope_scaling.to_hf()
        return out


def _llama(vocab, d, f, layers, heads, kv=None, ctx=2048, eps=1e-6, theta=1e4, scaling=None, tie=False):
    return LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=f, num_layers=layers,
                       num_heads=heads, num_kv_heads=kv, max_position_embeddings=ctx, rms_norm_eps=eps,
                       rope_theta=theta, rope_scaling=scaling, tie_word_embeddings=tie)


_LLAMA3_SCALING = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                              original_max_position_embeddings=8192)

PRESETS: dict[str, LlamaConfig] = {
    # Test and mini-world sizes.
    "tiny": _llama(256, 64, 128, 2, 4, ctx=256),
    "tiny-gqa": _llama(256, 64, 128, 2, 4, kv=2, ctx=256, theta=500000.0, scaling=_LLAMA3_SCALING),
    # The mini family (CPU mini world): ~0.17M / 0.43M / 0.94M parameters, 512-token vocab.
    "mini-s": _llama(512, 64, 176, 2, 2, ctx=512),
    "mini-m": _llama(512, 96, 256, 3, 3, ctx=512),
    "mini-l": _llama(512, 128, 352, 4, 4, ctx=512),
    # Benchmark sizes.
    "bench-10m": _llama(32000, 256, 688, 4, 4, ctx=2048, eps=1e-5),
    "bench-134m": _llama(32000, 768, 2048, 12, 12, ctx=2048, eps=1e-5),
    "tinyllama-1.1b": _llama(32000, 2048, 5632, 22, 32, kv=4, ctx=2048, eps=1e-5),
    # LLaMA-1 (Touvron et al. 2023a).
    "llama1-7b": _llama(32000, 4096, 11008, 32, 32),
    "llama1-13b": _llama(32000, 5120, 13824, 40, 40),
    "llama1-30b": _llama(32000, 6656, 17920, 60, 52),
    "llama1-65b": _llama(32000, 8192, 22016, 80, 64),
    # LLaMA-2 (Touvron et al. 2023b).
    "llama2-7b": _llama(32000, 4096, 11008, 32, 32, ctx=4096, eps=1e-5),
    "llama2-13b": _llama(32000, 5120, 13824, 40, 40, ctx=4096, eps=1e-5),
    "llama2-70b": _llama(32000, 8192, 28672, 80, 64, kv=8, ctx=4096, eps=1e-5),
    # LLaMA-3 / 3.1 8B.
    "llama3-8b": _llama(128256, 4096, 14336, 32, 32, kv=8, ctx=8192, eps=1e-5, theta=500000.0).replace(
        bos_token_id=128000, eos_token_id=128001),
    "llama3.1-8b": _llama(128256, 4096, 14336, 32, 32, kv=8, ctx=131072, eps=1e-5, theta=500000.0,
                          scaling=_LLAMA3_SCALING).replace(bos_token_id=128000, eos_token_id=128001),
}


def get_config(name: str, **overrides) -> LlamaConfig:
    """A named preset with field overrides (e.g. dtype="bfloat16", remat=True)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    cfg = PRESETS[name]
    return cfg.replace(**overrides) if overrides else cfg
