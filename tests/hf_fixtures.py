"""Tiny random Hugging Face LLaMA models saved to disk by the tests themselves (no hub)."""
from __future__ import annotations

import numpy as np

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 32}


def hf_config(kind: str = "mha", vocab: int = 128, tie: bool = False):
    import transformers
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=tie,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "mha":
        return transformers.LlamaConfig(num_key_value_heads=4, rms_norm_eps=1e-5, **common)
    if kind == "gqa":
        return transformers.LlamaConfig(num_key_value_heads=2, rope_theta=500000.0, rope_scaling=dict(LLAMA3_SCALING),
                                        **common)
    raise ValueError(kind)


def tiny_hf_llama(kind: str = "mha", vocab: int = 128, tie: bool = False, seed: int = 0):
    import torch
    import transformers
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(hf_config(kind, vocab, tie)).eval()
    with torch.no_grad():  # non-trivial norm weights so a norm mapping error would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save_tiny_llama(path, kind: str = "mha", vocab: int = 128, tie: bool = False, seed: int = 0,
                    safe_serialization: bool = True, max_shard_size: str | None = None):
    model = tiny_hf_llama(kind, vocab, tie, seed)
    kwargs = {"safe_serialization": safe_serialization}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(str(path), **kwargs)
    return path, model


def hf_to_flax_inline(model):
    """Reference mapping used only by tests of other modules (the package's converter is
    almost_jax.checkpoints.hf): HF [out, in] -> Flax [in, ...]; rotate-half layout, no permute."""
    from almost_jax.models.config import LlamaConfig
    cfg = LlamaConfig.from_hf(model.config.to_dict())
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    d, hd = cfg.hidden_size, cfg.dim_per_head
    params = {"model": {"embed_tokens": {"embedding": sd["model.embed_tokens.weight"]},
                        "norm": {"scale": sd["model.norm.weight"]}}}
    if not cfg.tie_word_embeddings:
        params["lm_head"] = {"kernel": sd["lm_head.weight"].T}
    for i in range(cfg.num_layers):
        g = lambda n: sd[f"model.layers.{i}.{n}"]  # noqa: E731
        params["model"][f"layers_{i}"] = {
            "self_attn": {"q_proj": {"kernel": g("self_attn.q_proj.weight").T.reshape(d, cfg.num_heads, hd)},
                          "k_proj": {"kernel": g("self_attn.k_proj.weight").T.reshape(d, cfg.kv_heads, hd)},
                          "v_proj": {"kernel": g("self_attn.v_proj.weight").T.reshape(d, cfg.kv_heads, hd)},
                          "o_proj": {"kernel": g("self_attn.o_proj.weight").T.reshape(cfg.num_heads, hd, d)}},
            "mlp": {k: {"kernel": g(f"mlp.{k}.weight").T} for k in ("gate_proj", "up_proj", "down_proj")},
            "input_layernorm": {"scale": g("input_layernorm.weight")},
            "post_attention_layernorm": {"scale": g("post_attention_layernorm.weight")}}
    return cfg, params


def left_padded_batch(vocab: int, lengths, seed: int = 0, pad_id: int = 0):
    rs = np.random.RandomState(seed)
    t = max(lengths)
    ids = np.full((len(lengths), t), pad_id, np.int64)
    mask = np.zeros((len(lengths), t), np.int64)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = rs.randint(3, vocab, n)
        mask[i, t - n:] = 1
    return ids, mask
