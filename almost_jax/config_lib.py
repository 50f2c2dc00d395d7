"""Building blocks for job configs (ml_collections), and turning blocks into objects.

Every job config under `configs/` composes these blocks; every value a user may want to change
lives here or in the job file, never as a constant inside the code. Override any field on the
command line: `--config.train.steps=100 --config.mesh.tensor=2`.
"""
from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Sequence

from ml_collections import ConfigDict

from almost_jax.models.config import LlamaConfig, get_config


def model_block(preset: str = "tiny", hf_path: str = "", dtype: str = "float32", param_dtype: str = "float32",
                remat: bool = False, attention_impl: str = "xla") -> ConfigDict:
    """`hf_path` (a HF checkpoint dir) wins over `preset` for the architecture."""
    return ConfigDict(dict(preset=preset, hf_path=hf_path, dtype=dtype, param_dtype=param_dtype, remat=remat,
                           attention_impl=attention_impl))


def tokenizer_fields(path: str = "", key: str = "tokenizer") -> dict:
    """The tokenizer fields every job and sampler setup carries (splice into a block with `**`):
    `tokenizer`: a tokenizer.json / tokenizer.model or a dir holding one ("" = the tokenizer of an
    HF `params` dir, see checkpoints.source); `tokenizer_bos` / `tokenizer_eos` / `tokenizer_pad`:
    overrides of the special tokens the files name, as a token string or an id ("" = as the files
    say); `allow_vocab_padding`: how many embedding rows past the tokenizer's vocab are allowed."""
    return {key: path, f"{key}_bos": "", f"{key}_eos": "", f"{key}_pad": "", "allow_vocab_padding": 0}


def mesh_block(data: int = 1, fsdp: int = -1, tensor: int = 1) -> ConfigDict:
    # `rules`: overrides of parallel.rules.DEFAULT_RULES as (logical_name, mesh_axis_or_None) pairs.
    return ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor, rules=()))


def optimizer_block(lr: float = 2e-5, weight_decay: float = 0.0, schedule: str = "cosine", warmup_ratio: float = 0.03,
                    warmup_steps: int = 0, min_lr_ratio: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                    eps: float = 1e-8, grad_clip: float = 1.0, name: str = "adamw") -> ConfigDict:
    return ConfigDict(dict(name=name, lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_ratio=warmup_ratio,
                           warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, b1=b1, b2=b2, eps=eps,
                           grad_clip=grad_clip))


def train_block(steps: int = 100, batch_size: int = 8, grad_accum_steps: int = 1, seq_len: int = 256,
                log_every: int = 10, eval_every: int = 0, checkpoint_every: int = 100, seed: int = 0,
                progress: bool = True) -> ConfigDict:
    return ConfigDict(dict(steps=steps, batch_size=batch_size, grad_accum_steps=grad_accum_steps, seq_len=seq_len,
                           log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every, seed=seed,
                           progress=progress))


def distributed_block() -> ConfigDict:
    """Multi-host start-up; TPU pods and SLURM need nothing here (JAX discovers its peers)."""
    return ConfigDict(dict(enabled=False, coordinator_address="", num_processes=0, process_id=0))


def llama_config(model_cfg: ConfigDict) -> LlamaConfig:
    numerics = dict(dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype, remat=bool(model_cfg.remat),
                    attention_impl=model_cfg.get("attention_impl", "xla"))
    if model_cfg.get("hf_path"):
        path = Path(model_cfg.hf_path) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"model.hf_path: no config.json in {model_cfg.hf_path}")
        return LlamaConfig.from_hf(json.loads(path.read_text()), **numerics)
    return get_config(model_cfg.preset, **numerics)


# ----- loading config files outside absl (pipeline, tests) -----

def load_config_file(path: str | Path, overrides: Sequence[str] = ()) -> ConfigDict:
    """Import `configs/x.py`, call its `get_config()`, apply `key.sub=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_almost_cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path} defines no get_config()")
    cfg = module.get_config()
    apply_overrides(cfg, overrides)
    return cfg


def apply_overrides(cfg: ConfigDict, overrides: Sequence[str]) -> ConfigDict:
    for item in overrides:
        item = item[len("--config."):] if item.startswith("--config.") else item
        if "=" not in item:
            raise ValueError(f"config override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = cfg
        for i, part in enumerate(parents):
            if part not in node:
                raise KeyError(f"config has no field {'.'.join(parents[:i + 1])!r} (override {item!r})")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"config has no field {key!r}; fields here: {sorted(node.keys())}")
        if isinstance(node[leaf], str):
            value = raw  # a string field keeps the text as given (e.g. tokenizer_pad=0, a token id)
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        node[leaf] = value  # ConfigDict type-checks the assignment
    return cfg
