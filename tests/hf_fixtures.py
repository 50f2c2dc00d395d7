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


# ----- tokenizers built locally (no hub), saved the way Hugging Face checkpoint dirs hold them -----

TOKENIZER_TEXT = [
    "Hello world! How are you today?", "The quick brown fox jumps over the lazy dog.",
    "Human: What is 2 + 3?\n\nAssistant: 2 + 3 = 5.", "  leading spaces and trailing  ",
    "Tabs\tand\nnewlines\n\n\nmany", "Unicode: café, naïve, Straße, 東京, 😀 emoji, ελληνικά.",
    "def f(x):\n    return x * 2  # code", "Numbers 12345 and 3.14159, 1e-5.",
]


def save_bpe_tokenizer(path, vocab_size: int = 400, bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>",
                       legacy_special_map: bool = False):
    """A GPT-2-style byte-level BPE `tokenizer.json` like SmolLM2's (specials <|endoftext|> = 0,
    <|im_start|> = 1, <|im_end|> = 2), with tokenizer_config.json naming bos/eos/pad. With
    `legacy_special_map`, the names live in special_tokens_map.json instead (older checkpoints)."""
    import json
    from pathlib import Path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TOKENIZER_TEXT * 20, trainer)
    tok.save(str(path / "tokenizer.json"))
    names = {k: v for k, v in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", "<|endoftext|>"))
             if v is not None}
    cfg = {"tokenizer_class": "GPT2Tokenizer", "clean_up_tokenization_spaces": False, "model_max_length": 2048}
    if legacy_special_map:
        (path / "special_tokens_map.json").write_text(json.dumps(names))
    else:
        cfg.update(names)
        cfg["added_tokens_decoder"] = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                                "single_word": False, "special": True} for i, t in enumerate(specials)}
    (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))
    return path, tok.get_vocab_size()


def save_sp_tokenizer(path, vocab_size: int = 400):
    """A LLaMA-style SentencePiece `tokenizer.model` (<unk> 0, <s> 1, </s> 2, byte fallback) with a
    tokenizer_config.json naming LlamaTokenizer, as LLaMA-1/2 HF dirs hold it."""
    import io
    import json
    from pathlib import Path
    import sentencepiece as spm
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TOKENIZER_TEXT * 20), model_writer=model,
                                   vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   hard_vocab_limit=False, minloglevel=2)
    (path / "tokenizer.model").write_bytes(model.getvalue())
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "clean_up_tokenization_spaces": False}, indent=1))
    sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
    return path, sp.get_piece_size()
