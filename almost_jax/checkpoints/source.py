"""Where a job's model comes from: one rule for every job that takes weights.

A block of a job config names its weights (`params`, `init_from`, `policy_init`, ...), its
architecture (`model`: `hf_path` or `preset`) and its tokenizer (`tokenizer` plus the
`tokenizer_bos/eos/pad` overrides of `config_lib.tokenizer_fields`). When the weights are a
Hugging Face checkpoint dir, that dir also gives

- the architecture (its config.json), unless `model.hf_path` names another dir;
- the tokenizer (its tokenizer.json / tokenizer.model and special-token files), unless
  `tokenizer` is set.

So `tokenizer=""` in a config means "the tokenizer of the weights". A config file's own default
(e.g. the mini world's tokenizer next to the mini world's weights) yields when the weights are
changed on the command line: `run_job` calls `follow_params_from_command_line`, which clears the
defaults that belong to a params key set on the command line to an HF dir, unless they were
set on the command line too. A `model.preset` set on the command line next to an HF dir must
describe the same architecture as its config.json (else a clear error), never silently lost.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Collection, Optional

from ml_collections import ConfigDict

from almost_jax.checkpoints.load import is_hf_dir
from almost_jax.config_lib import llama_config
from almost_jax.data.tokenizer import Tokenizer, check_vocab, tokenizer_from_config
from almost_jax.models.config import LlamaConfig, get_config

log = logging.getLogger(__name__)

# Weights key -> (its model block, its tokenizer key), both relative to the block holding the
# weights key. The jobs' names for them; a caller may pass others to `resolve`.
SOURCE_KEYS = {
    "params": ("model", "tokenizer"),  # sampler setups, chat, eval_policy, rmsp's rm block
    "init_from": ("model", "data.tokenizer"),  # sft, train_rm, pretrain (continued pretraining)
    "policy_init": ("policy_model", "tokenizer"),  # the RL job's policy
}
# Reward models are not listed: they load with their scoring contract (learners.reward.load_reward_model).
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "kv_heads",
                       "dim_per_head", "tie_word_embeddings")


@dataclasses.dataclass(frozen=True)
class Source:
    """What a block's weights need: where they are, the architecture, and the tokenizer."""

    params: str  # an almost_jax params dir, an HF dir, or "" (a fresh model)
    model: LlamaConfig
    tokenizer: Optional[Tokenizer]
    model_from: str  # where the architecture came from, for logs and manifests
    tokenizer_from: str

    def describe(self) -> dict:
        return {"params": self.params, "architecture": self.model_from, "tokenizer": self.tokenizer_from}


def _get(block: ConfigDict, dotted: str):
    node = block
    for part in dotted.split("."):
        node = node[part]
    return node


def _split(dotted: str) -> tuple[str, str]:
    parent, _, leaf = dotted.rpartition(".")
    return parent, leaf


def has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / n).is_file() for n in ("tokenizer.json", "tokenizer.model"))


def model_source(block: ConfigDict, params_key: str = "params", model_key: Optional[str] = None) -> tuple[LlamaConfig, str]:
    """(architecture + numerics, where from): `model.hf_path` > the HF params dir's config.json >
    `model.preset` (config_lib.llama_config reads the block)."""
    model_key = model_key or SOURCE_KEYS[params_key][0]
    m = _get(block, model_key)
    params = str(block.get(params_key) or "")
    if m.get("hf_path"):
        return llama_config(m), f"{Path(m.hf_path) / 'config.json'} ({model_key}.hf_path)"
    if params and is_hf_dir(params):
        return llama_config(ConfigDict({**m.to_dict(), "hf_path": params})), \
            f"{Path(params) / 'config.json'} ({params_key})"
    return llama_config(m), f"preset {m.preset}"


def tokenizer_path(block: ConfigDict, params_key: str = "params", tokenizer_key: Optional[str] = None) -> tuple[str, str]:
    """(tokenizer path, where from): `tokenizer` when set, else the HF params dir's own."""
    tokenizer_key = tokenizer_key or SOURCE_KEYS[params_key][1]
    explicit = _get(block, tokenizer_key)
    if explicit:
        return str(explicit), tokenizer_key
    params = str(block.get(params_key) or "")
    if params and is_hf_dir(params):
        if not has_tokenizer(params):
            raise FileNotFoundError(f"{params_key}={params} holds no tokenizer.json or tokenizer.model: set "
                                    f"{tokenizer_key} to the model's tokenizer")
        return params, f"{params_key} (HF dir)"
    raise ValueError(f"no tokenizer: set {tokenizer_key} (a tokenizer.json / tokenizer.model or a dir holding one); "
                     f"it can be left empty only when {params_key} is a Hugging Face checkpoint dir")


def resolve(block: ConfigDict, params_key: str = "params", model_key: Optional[str] = None,
            tokenizer_key: Optional[str] = None, with_tokenizer: bool = True) -> Source:
    """The weights, architecture and (loaded, vocab-checked) tokenizer a config block names.

    `block` is the ConfigDict holding `params_key` (a job config, or a sampler setup inside one);
    model/tokenizer keys default to SOURCE_KEYS[params_key]."""
    default_model, default_tok = SOURCE_KEYS.get(params_key, ("model", "tokenizer"))
    model_key, tokenizer_key = model_key or default_model, tokenizer_key or default_tok
    model, model_from = model_source(block, params_key, model_key)
    tok, tok_from = None, ""
    if with_tokenizer:
        path, tok_from = tokenizer_path(block, params_key, tokenizer_key)
        parent, leaf = _split(tokenizer_key)
        node = _get(block, parent) if parent else block
        tok = tokenizer_from_config(node, leaf, path)
        check_vocab(tok, model.vocab_size, int(node.get("allow_vocab_padding", block.get("allow_vocab_padding", 0))))
    source = Source(str(block.get(params_key) or ""), model, tok, model_from, tok_from)
    log.info("model source: %s", source.describe())
    return source


# ----- the command line: defaults yield to an HF dir given for the weights -----

def follow_params_from_command_line(cfg: ConfigDict, overridden: Collection[str]) -> list[str]:
    """Clear the config file's tokenizer / `model.hf_path` defaults of every block whose weights
    key was set on the command line to an HF dir (unless those were set on the command line too),
    so `resolve` takes them from that dir. Returns the keys cleared (for the log)."""
    overridden = set(overridden)
    cleared = []
    for key in sorted(overridden):
        parent, leaf = _split(key)
        if leaf not in SOURCE_KEYS:
            continue
        block = _get(cfg, parent) if parent else cfg
        if not isinstance(block, ConfigDict) or not block.get(leaf) or not is_hf_dir(block[leaf]):
            continue
        model_key, tok_key = SOURCE_KEYS[leaf]
        prefix = f"{parent}." if parent else ""
        _check_preset(block, leaf, model_key, overridden, prefix)
        for dotted in (f"{model_key}.hf_path", tok_key):
            if prefix + dotted in overridden:
                continue
            try:
                value = _get(block, dotted)
            except (KeyError, AttributeError):
                continue
            if value:
                p, l = _split(dotted)
                (_get(block, p) if p else block)[l] = ""
                cleared.append(prefix + dotted)
    if cleared:
        log.info("weights given on the command line are HF dirs: their config.json / tokenizer replace the "
                 "config's defaults %s", cleared)
    return cleared


def _check_preset(block: ConfigDict, params_key: str, model_key: str, overridden: set, prefix: str) -> None:
    if prefix + f"{model_key}.preset" not in overridden or prefix + f"{model_key}.hf_path" in overridden:
        return
    m = _get(block, model_key)
    hf = LlamaConfig.from_hf(json.loads((Path(block[params_key]) / "config.json").read_text()))
    preset = get_config(m.preset)
    differ = {f: (getattr(preset, f), getattr(hf, f)) for f in ARCHITECTURE_FIELDS if getattr(preset, f) != getattr(hf, f)}
    if differ:
        raise ValueError(f"{prefix}{model_key}.preset={m.preset} does not describe the weights in {block[params_key]} "
                         f"(preset vs config.json: {differ}); the HF dir's config.json gives the architecture - "
                         f"drop the preset, or set {prefix}{model_key}.hf_path to another config.json's dir")
