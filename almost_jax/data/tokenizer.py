"""Tokenizers behind one small interface, read from a checkpoint dir the way `transformers` reads
them: `tokenizer.json` (the `tokenizers` library: LLaMA-3, SmolLM2, any byte-level BPE) or a
SentencePiece `tokenizer.model` (LLaMA-1/2, the mini world).

The special tokens come from the files, in transformers' order (see `special_tokens`):
`tokenizer_config.json` (`bos_token` / `eos_token` / `pad_token`), `special_tokens_map.json`
where transformers still reads it (a `tokenizer_config.json` without `added_tokens_decoder`),
then the tokenizer's own defaults (SentencePiece's bos/eos pieces), then the model's
`config.json` (`bos_token_id` / ...). Command-line overrides (`tokenizer_bos` / `tokenizer_eos` /
`tokenizer_pad`: a token string or an id) beat all of these. No model family's tokens are
assumed. `add_bos` says whether the model's texts start with BOS (`add_bos_token` in
`tokenizer_config.json`, else what the tokenizer's own post-processor does), so sampling and
training agree with `transformers`' `tokenizer(text)`.

A tokenizer without a BOS token (GPT-2 style) uses its EOS id where an id is needed (transformers'
convention for GPT-2); it never adds it to texts. Without a pad token, padding uses EOS (always
masked out). `check_vocab` refuses a tokenizer whose ids do not fit the model.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

SPECIAL_NAMES = ("bos", "eos", "pad")


class Tokenizer(abc.ABC):
    path: Path
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    has_bos: bool = True  # the tokenizer defines a BOS token
    add_bos: bool = True  # the model's texts start with BOS (transformers' add_special_tokens=True)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self._encode(text)
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    @property
    def prefix_ids(self) -> list[int]:
        """What starts every text of this model: [BOS], or nothing (GPT-2 style tokenizers)."""
        return [self.bos_id] if self.add_bos else []

    @abc.abstractmethod
    def _encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids (special tokens kept as their pieces)."""

    def token_to_id(self, token: str) -> Optional[int]:
        """The id of one vocabulary entry, or None (a tokenizer that cannot look tokens up)."""
        return None

    def describe(self) -> str:
        return (f"{self.path} ({type(self).__name__}, {self.vocab_size} tokens, bos={self.bos_id} "
                f"eos={self.eos_id} pad={self.pad_id}, add_bos={self.add_bos})")


class SentencePieceTokenizer(Tokenizer):
    def __init__(self, model_path: str | Path, special: Optional["SpecialTokens"] = None):
        import sentencepiece as spm
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path}")
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self.sp.get_piece_size()
        # The model file's own pieces are the defaults (LLaMA: <s>, </s>, no pad piece: pad with
        # <unk> = 0, always masked out by attention_mask).
        sp_pad = self.sp.pad_id()
        defaults = {"bos": _nonneg(self.sp.bos_id()), "eos": _nonneg(self.sp.eos_id()),
                    "pad": sp_pad if sp_pad >= 0 else 0}
        _apply_special(self, special or SpecialTokens(), defaults)
        self._dummy_prefix = self.sp.encode("a", out_type=str)[0].startswith("\u2581")

    def _encode(self, text: str) -> list[int]:
        # transformers' fast LLaMA tokenizer (a Metaspace pre-tokenizer) adds the "▁" prefix only
        # when the text does not already start with a space; sentencepiece always adds it. Drop
        # one leading space so both read " x" as "▁x", as transformers does.
        if self._dummy_prefix and text.startswith(" "):
            return self.sp.encode(text[1:]) if len(text) > 1 else [self.sp.piece_to_id("\u2581")]
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def token_to_id(self, token: str) -> Optional[int]:
        i = self.sp.piece_to_id(token)
        return i if self.sp.id_to_piece(i) == token else None


class HFTokenizer(Tokenizer):
    """A `tokenizer.json` read with the `tokenizers` library."""

    def __init__(self, path: str | Path, special: Optional["SpecialTokens"] = None):
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("reading tokenizer.json needs the `tokenizers` package (pip install tokenizers)") from e
        self.path = Path(path)
        self.tok = _Tok.from_file(str(self.path))
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        _apply_special(self, special or SpecialTokens(), {})
        if self.has_bos and (special is None or special.add_bos is None):  # what its post-processor does
            probe = self.tok.encode("a", add_special_tokens=True).ids
            self.add_bos = bool(probe) and probe[0] == self.bos_id and self.bos_id not in self._encode("a")

    def _encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_to_id(self, token: str) -> Optional[int]:
        return self.tok.token_to_id(token)


# ----- special tokens -----

@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """bos/eos/pad as a token string or an id (None = not given), and whether texts start with
    BOS (None = the tokenizer's default). `source` names where each came from, for messages."""

    bos: Any = None
    eos: Any = None
    pad: Any = None
    add_bos: Optional[bool] = None
    source: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def merged_over(self, base: "SpecialTokens") -> "SpecialTokens":
        """These values where given, else `base`'s."""
        picked = {n: getattr(self, n) if getattr(self, n) is not None else getattr(base, n) for n in SPECIAL_NAMES}
        source = {n: (self.source if getattr(self, n) is not None else base.source).get(n, "") for n in SPECIAL_NAMES}
        return SpecialTokens(**picked, add_bos=self.add_bos if self.add_bos is not None else base.add_bos,
                             source=source)


def _token_text(value) -> Optional[str]:
    """A token as tokenizer_config.json / special_tokens_map.json write it: a string or an
    AddedToken dict {"content": ...}; None when absent."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def special_tokens(model_dir: str | Path) -> SpecialTokens:
    """Special tokens of an HF checkpoint dir, in transformers' precedence (highest first):
    `tokenizer_config.json`; `special_tokens_map.json` (which transformers merges over the
    config only when the config has no `added_tokens_decoder`, its legacy format); the model's
    `config.json` ids as the last resort (transformers' generation reads EOS there too)."""
    d = Path(model_dir)
    found: dict[str, Any] = {}
    source: dict[str, str] = {}
    tok_cfg = _read_json(d / "tokenizer_config.json") if (d / "tokenizer_config.json").is_file() else {}
    for n in SPECIAL_NAMES:
        if _token_text(tok_cfg.get(f"{n}_token")):
            found[n], source[n] = _token_text(tok_cfg[f"{n}_token"]), f"{d / 'tokenizer_config.json'}:{n}_token"
    if (d / "special_tokens_map.json").is_file() and "added_tokens_decoder" not in tok_cfg:
        smap = _read_json(d / "special_tokens_map.json")
        for n in SPECIAL_NAMES:
            if _token_text(smap.get(f"{n}_token")):
                found[n], source[n] = _token_text(smap[f"{n}_token"]), f"{d / 'special_tokens_map.json'}:{n}_token"
    if (d / "config.json").is_file():
        model_cfg = _read_json(d / "config.json")
        for n in SPECIAL_NAMES:
            value = model_cfg.get(f"{n}_token_id")
            if isinstance(value, list):
                value = value[0] if value else None
            if n not in found and isinstance(value, int):
                found[n], source[n] = value, f"{d / 'config.json'}:{n}_token_id"
    add_bos = tok_cfg.get("add_bos_token")
    return SpecialTokens(**found, add_bos=add_bos if isinstance(add_bos, bool) else None, source=source)


def overrides(bos: str | int = "", eos: str | int = "", pad: str | int = "", add_bos: Optional[bool] = None,
              where: str = "config") -> SpecialTokens:
    """Command-line overrides: "" = not given; an int (or a string of digits) is an id, anything
    else a token string looked up in the vocabulary."""
    def parse(v):
        if v is None or v == "":
            return None
        if isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):
            return int(v)
        return str(v)
    given = {n: parse(v) for n, v in zip(SPECIAL_NAMES, (bos, eos, pad))}
    return SpecialTokens(**given, add_bos=add_bos, source={n: f"{where}.tokenizer_{n}" for n in SPECIAL_NAMES})


def _apply_special(tok: Tokenizer, special: SpecialTokens, defaults: Mapping[str, Optional[int]]) -> None:
    ids: dict[str, Optional[int]] = {}
    for n in SPECIAL_NAMES:
        value = getattr(special, n)
        if value is None:
            ids[n] = defaults.get(n)
            continue
        where = special.source.get(n) or "special tokens"
        if isinstance(value, int):
            if not 0 <= value < tok.vocab_size:
                raise ValueError(f"{tok.path}: {n} id {value} (from {where}) is outside the vocabulary "
                                 f"[0, {tok.vocab_size})")
            ids[n] = value
        else:
            i = tok.token_to_id(value)
            if i is None:
                raise ValueError(f"{tok.path}: {n} token {value!r} (from {where}) is not in the vocabulary; "
                                 f"set tokenizer_{n} to a token of this tokenizer or an id")
            ids[n] = i
    if ids["eos"] is None:
        raise ValueError(f"{tok.path}: no EOS token: none in tokenizer_config.json, special_tokens_map.json or "
                         f"config.json; set tokenizer_eos (a token string or an id)")
    tok.has_bos = has_bos = ids["bos"] is not None
    tok.bos_id = ids["bos"] if has_bos else ids["eos"]
    tok.eos_id = ids["eos"]
    tok.pad_id = ids["pad"] if ids["pad"] is not None else ids["eos"]
    tok.add_bos = has_bos and (special.add_bos if special.add_bos is not None else True)


def _nonneg(i: int) -> Optional[int]:
    return i if i >= 0 else None


def load_tokenizer(path: str | Path, bos: str | int = "", eos: str | int = "", pad: str | int = "",
                   add_bos: Optional[bool] = None) -> Tokenizer:
    """A `tokenizer.json`, a `.model` file, or a checkpoint dir holding either (tokenizer.json
    first, as transformers' AutoTokenizer prefers the fast tokenizer), with the dir's special
    tokens; `bos` / `eos` / `pad` / `add_bos` override them (see `overrides`)."""
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (path / name).is_file():
                return load_tokenizer(path / name, bos, eos, pad, add_bos)
        raise FileNotFoundError(f"no tokenizer.json or tokenizer.model in {path}")
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path}")
    special = overrides(bos, eos, pad, add_bos).merged_over(special_tokens(path.parent))
    if path.suffix == ".json":
        return HFTokenizer(path, special)
    return SentencePieceTokenizer(path, special)


def tokenizer_from_config(node, key: str = "tokenizer", path: Optional[str] = None) -> Tokenizer:
    """The tokenizer a config block names: `node[key]` (or `path`) with the `<key>_bos` /
    `<key>_eos` / `<key>_pad` overrides of `config_lib.tokenizer_fields` when the block has them."""
    get = node.get if hasattr(node, "get") else (lambda k, d=None: d)
    path = path if path is not None else node[key]
    if not path:
        raise ValueError(f"no tokenizer: set {key} (a tokenizer.json / tokenizer.model, or a dir holding one)")
    tok = load_tokenizer(path, get(f"{key}_bos", ""), get(f"{key}_eos", ""), get(f"{key}_pad", ""))
    log.info("tokenizer: %s", tok.describe())
    return tok


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, allow_padding: int = 0) -> None:
    """Refuse a tokenizer that does not match the model: ids past the embedding table would be
    silently wrong, and a much smaller vocab means the wrong tokenizer was given."""
    extra = model_vocab_size - tokenizer.vocab_size
    if extra < 0 or extra > allow_padding:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'path', '')} has {tokenizer.vocab_size} tokens but the model's "
            f"embedding has {model_vocab_size} rows: this tokenizer does not belong to this model "
            f"(set allow_vocab_padding if the model's vocab was padded on purpose)")
    for name in ("bos_id", "eos_id", "pad_id"):
        value = getattr(tokenizer, name)
        if not 0 <= value < model_vocab_size:
            raise ValueError(f"tokenizer {name}={value} is outside the model vocab [0, {model_vocab_size})")
