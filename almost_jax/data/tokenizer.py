"""Tokenizers behind one small interface: SentencePiece (LLaMA-1/2 `tokenizer.model`, the mini
world) and Hugging Face `tokenizer.json` (LLaMA-3). BOS/EOS/pad are explicit attributes, and
`check_vocab` refuses a tokenizer whose ids do not fit the model.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Optional, Sequence


class Tokenizer(abc.ABC):
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self._encode(text)
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    @abc.abstractmethod
    def _encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids (special tokens kept as their pieces)."""


class SentencePieceTokenizer(Tokenizer):
    def __init__(self, model_path: str | Path, pad_id: Optional[int] = None):
        import sentencepiece as spm
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path}")
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        sp_pad = self.sp.pad_id()
        # LLaMA's tokenizer has no pad piece: pad with 0 (<unk>), always masked out by attention_mask.
        self.pad_id = pad_id if pad_id is not None else (sp_pad if sp_pad >= 0 else 0)

    def _encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


class HFTokenizer(Tokenizer):
    """A `tokenizer.json` read with the `tokenizers` library (installed with transformers)."""

    def __init__(self, path: str | Path, bos_token: str = "<|begin_of_text|>", eos_token: str = "<|end_of_text|>",
                 pad_id: Optional[int] = None):
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("reading tokenizer.json needs the `tokenizers` package (pip install tokenizers)") from e
        self.path = Path(path)
        self.tok = _Tok.from_file(str(self.path))
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        vocab = self.tok.get_vocab(with_added_tokens=True)
        missing = [t for t in (bos_token, eos_token) if t not in vocab]
        if missing:
            raise ValueError(f"{self.path}: special token(s) {missing} not in the vocabulary; pass bos_token/eos_token")
        self.bos_id, self.eos_id = vocab[bos_token], vocab[eos_token]
        self.pad_id = self.eos_id if pad_id is None else pad_id

    def _encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


def load_tokenizer(path: str | Path, **kwargs) -> Tokenizer:
    """A `.model` file, a `tokenizer.json`, or a checkpoint directory holding either."""
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.model", "tokenizer.json"):
            if (path / name).is_file():
                return load_tokenizer(path / name, **kwargs)
        raise FileNotFoundError(f"no tokenizer.model or tokenizer.json in {path}")
    if path.suffix == ".json":
        return HFTokenizer(path, **kwargs)
    return SentencePieceTokenizer(path, **kwargs)


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, allow_padding: int = 0) -> None:
    """Refuse a tokenizer that does not match the model: ids past the embedding table would be
    silently wrong, and a much smaller vocab means the wrong tokenizer was given."""
    extra = model_vocab_size - tokenizer.vocab_size
    if extra < 0 or extra > allow_padding:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'path', '')} has {tokenizer.vocab_size} tokens but the model's "
            f"embedding has {model_vocab_size} rows: this tokenizer does not belong to this model "
            f"(if its vocab was padded on purpose, set allow_vocab_padding in the config block that names this "
            f"tokenizer: --config.data.allow_vocab_padding in pretrain/sft/train_rm, --config.allow_vocab_padding "
            f"in ppo/eval_rm/chat/eval_policy, --config.<setup>.allow_vocab_padding for a sampler setup, e.g. "
            f"setups.A, assistant, user, rm, generator)")
    for name in ("bos_id", "eos_id", "pad_id"):
        value = getattr(tokenizer, name)
        if not 0 <= value < model_vocab_size:
            raise ValueError(f"tokenizer {name}={value} is outside the model vocab [0, {model_vocab_size})")
