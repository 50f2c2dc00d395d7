"""llama.cpp GGUF files -> Hugging Face checkpoint dirs (LLaMA architecture, byte-level BPE vocab).

    python -m almost_jax.checkpoints.gguf SmolLM2-135M-Instruct.Q4_1.gguf work_dir/smollm2-135m-instruct

Needs the `gguf` package (`pip install almost_jax[gguf]`), imported only here. Every tensor is
dequantized to float32 with `gguf.quants.dequantize` (quantized files are lossy: the result is the
model llama.cpp runs, not the original bf16 weights). llama.cpp's converter permutes the q/k
projection rows into its interleaved rotary layout; `unpermute` undoes it, so the weights are in
Hugging Face's rotate-half layout again. The dir gets config.json, model.safetensors, and the
tokenizer rebuilt from the GGUF's vocabulary (tokens, merges, token types -> tokenizer.json;
bos/eos/pad/unk ids and the chat template -> tokenizer_config.json and special_tokens_map.json).
Everything is written to a temporary dir beside OUT_DIR and renamed into place at the end.

Supported: `general.architecture = llama` with a `gpt2` (byte-level BPE) vocabulary whose
pre-tokenizer llama.cpp calls `default`/`gpt2` or one of the digit-splitting GPT-2 variants
(`smollm`, `starcoder`, `refact`); anything else is refused with its name.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from almost_jax.checkpoints.hf import replace_dir
from almost_jax.models.config import LlamaConfig, RopeScaling

log = logging.getLogger(__name__)

# llama.cpp tensor names (per layer with {i}) -> Hugging Face names.
TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
# llama.cpp pre-tokenizer names -> whether digits are split one by one before the GPT-2 regex.
BPE_PRE_TOKENIZERS = {"default": False, "gpt2": False, "smollm": True, "starcoder": True, "refact": True}
CONTROL, USER_DEFINED = 3, 4  # gguf.TokenType values that are added (special) tokens


def _gguf():
    try:
        import gguf
    except ImportError as e:
        raise ImportError("converting GGUF files needs the `gguf` package: pip install 'almost_jax[gguf]'") from e
    return gguf


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (rotate-half -> interleaved pairs), per head."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of `permute`: interleaved rotary pairs back to Hugging Face's rotate-half rows."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(gguf_name: str) -> str:
    m = _LAYER_RE.match(gguf_name)
    key = f"blk.{{i}}.{m.group(2)}" if m else gguf_name
    if key not in TENSOR_NAMES:
        raise ValueError(f"GGUF tensor {gguf_name!r} has no LLaMA counterpart (known: {sorted(TENSOR_NAMES)})")
    return TENSOR_NAMES[key].format(i=m.group(1) if m else "")


class GGUFFile:
    """The metadata and tensors of one GGUF file (read lazily with gguf.GGUFReader)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        self.reader = _gguf().GGUFReader(str(self.path))
        self.arch = self.get("general.architecture")
        if self.arch != "llama":
            raise ValueError(f"{self.path}: general.architecture={self.arch!r}; only 'llama' converts to a "
                             f"LlamaForCausalLM checkpoint")

    def get(self, key: str, default: Any = None, required: bool = False) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            if required:
                raise ValueError(f"{self.path}: metadata key {key!r} missing")
            return default
        value = field.contents()
        return value

    def tensors(self):
        """(HF name, float32 array in HF's [out, in] layout) one at a time."""
        gguf = _gguf()
        heads, kv_heads = self.get(f"{self.arch}.attention.head_count"), self.get(f"{self.arch}.attention.head_count_kv")
        for t in self.reader.tensors:
            name = hf_name(t.name)
            array = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            array = array.reshape(tuple(int(x) for x in reversed(t.shape)))  # GGUF lists dims innermost first
            if name.endswith("q_proj.weight"):
                array = unpermute(array, heads)
            elif name.endswith("k_proj.weight"):
                array = unpermute(array, kv_heads or heads)
            yield name, np.ascontiguousarray(array)

    def tensor_names(self) -> list[str]:
        return [t.name for t in self.reader.tensors]


def llama_config(f: GGUFFile) -> LlamaConfig:
    a = f.arch
    tokens = f.get("tokenizer.ggml.tokens", required=True)
    hidden, heads = f.get(f"{a}.embedding_length", required=True), f.get(f"{a}.attention.head_count", required=True)
    head_dim = f.get(f"{a}.attention.key_length") or f.get(f"{a}.rope.dimension_count") or hidden // heads
    if f.get(f"{a}.rope.dimension_count", head_dim) != head_dim:
        raise ValueError(f"{f.path}: partial rotary embeddings (rope.dimension_count != head dim) are not supported")
    if "rope_freqs.weight" in f.tensor_names():
        raise ValueError(f"{f.path}: holds rope_freqs.weight (LLaMA-3.1 style frequency factors), not supported")
    scaling = None
    kind = f.get(f"{a}.rope.scaling.type")
    if kind and kind != "none":
        if kind not in ("linear", "yarn"):
            raise ValueError(f"{f.path}: rope scaling type {kind!r} is not supported (linear, yarn)")
        scaling = RopeScaling.from_hf({"rope_type": kind, "factor": f.get(f"{a}.rope.scaling.factor"),
                                       "original_max_position_embeddings": f.get(f"{a}.rope.scaling.original_context_length")},
                                      f.get(f"{a}.context_length", 2048))
    special = {n: f.get(f"tokenizer.ggml.{key}_token_id") for n, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"))}
    return LlamaConfig(
        vocab_size=len(tokens), hidden_size=hidden, intermediate_size=f.get(f"{a}.feed_forward_length", required=True),
        num_layers=f.get(f"{a}.block_count", required=True), num_heads=heads,
        num_kv_heads=f.get(f"{a}.attention.head_count_kv", heads), head_dim=head_dim,
        max_position_embeddings=f.get(f"{a}.context_length", 2048),
        rms_norm_eps=float(f.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(f.get(f"{a}.rope.freq_base", 10000.0)), rope_scaling=scaling,
        tie_word_embeddings="output.weight" not in f.tensor_names(),
        bos_token_id=special["bos"] if special["bos"] is not None else 1,
        eos_token_id=special["eos"] if special["eos"] is not None else 2,
        pad_token_id=special["pad"] if special["pad"] is not None else (special["eos"] or 0))


def build_tokenizer(f: GGUFFile):
    """A `tokenizers.Tokenizer` from the GGUF vocabulary (byte-level BPE)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    model = f.get("tokenizer.ggml.model", required=True)
    pre = f.get("tokenizer.ggml.pre", "default")
    if model != "gpt2":
        raise ValueError(f"{f.path}: tokenizer.ggml.model={model!r}; only 'gpt2' (byte-level BPE) vocabularies "
                         f"convert (SentencePiece 'llama' vocabularies are not supported)")
    if pre not in BPE_PRE_TOKENIZERS:
        raise ValueError(f"{f.path}: tokenizer.ggml.pre={pre!r} is not supported ({sorted(BPE_PRE_TOKENIZERS)})")
    tokens = f.get("tokenizer.ggml.tokens", required=True)
    types = f.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in f.get("tokenizer.ggml.merges", required=True)]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False,
                               byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if BPE_PRE_TOKENIZERS[pre] else byte_level)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL]
    tok.add_special_tokens(specials)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED])
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise ValueError(f"{f.path}: rebuilt vocabulary has {tok.get_vocab_size(with_added_tokens=True)} entries, "
                         f"the file lists {len(tokens)} (duplicate tokens?)")
    return tok, tokens, types


def tokenizer_files(f: GGUFFile, tokens, types) -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json contents."""
    names = {}
    for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding"), ("unk_token", "unknown")):
        i = f.get(f"tokenizer.ggml.{key}_token_id")
        if i is not None:
            names[name] = tokens[int(i)]
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
           "model_max_length": int(f.get(f"{f.arch}.context_length", 2048)), **names,
           "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                             "single_word": False, "special": ty == CONTROL}
                                    for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (CONTROL, USER_DEFINED)}}
    add_bos = f.get("tokenizer.ggml.add_bos_token")
    if add_bos is not None:
        cfg["add_bos_token"] = bool(add_bos)
    template = f.get("tokenizer.chat_template")
    if template:
        cfg["chat_template"] = template
    return {"tokenizer_config.json": cfg, "special_tokens_map.json": names}


def convert(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face checkpoint dir (config.json, model.safetensors, tokenizer files) for a
    llama.cpp GGUF file; returns out_dir."""
    from safetensors.numpy import save_file
    f = GGUFFile(gguf_path)
    cfg = llama_config(f)
    tok, tokens, types = build_tokenizer(f)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the checkpoint private to this user
    try:
        tensors = dict(f.tensors())
        expected = {"model.embed_tokens.weight": (cfg.vocab_size, cfg.hidden_size)}
        if tensors["model.embed_tokens.weight"].shape != expected["model.embed_tokens.weight"]:
            raise ValueError(f"{f.path}: token_embd.weight has shape {tensors['model.embed_tokens.weight'].shape}, "
                             f"the vocabulary and embedding_length say {expected['model.embed_tokens.weight']}")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        hf_cfg = cfg.to_hf()
        hf_cfg["torch_dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2))
        tok.save(str(tmp / "tokenizer.json"))
        for name, body in tokenizer_files(f, tokens, types).items():
            (tmp / name).write_text(json.dumps(body, indent=2, ensure_ascii=False))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s -> %s (%d tensors, %s params)", f.path, out, len(tensors),
             f"{sum(a.size for a in tensors.values()):,}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", help="a llama.cpp .gguf file (LLaMA architecture, byte-level BPE vocabulary)")
    parser.add_argument("out_dir", help="the Hugging Face checkpoint dir to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    convert(args.gguf, args.out_dir)


if __name__ == "__main__":
    main()
