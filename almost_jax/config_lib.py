"""Building blocks for job configs (ml_collections), and turning blocks into objects.

Every job config under `configs/` composes these blocks; every value a user may want to change
lives here or in the job file, never as a constant inside the code. Override any field on the
command line: `--config.train.steps=100 --config.mesh.tensor=2`.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Sequence

from ml_collections import ConfigDict

from almost_jax.data.errors import InputError, read_json_object
from almost_jax.models.config import LlamaConfig, get_config


def model_block(preset: str = "tiny", hf_path: str = "", dtype: str = "float32", param_dtype: str = "float32",
                remat_policy: str = "none", scan_layers: bool = False, attention_impl: str = "xla",
                remat: bool = False) -> ConfigDict:
    """`hf_path` (a HF checkpoint dir) wins over `preset` for the architecture.

    remat_policy: none / dots_saveable / dots_with_no_batch_dims_saveable / full (models.config);
    `remat=True` is the older spelling of remat_policy="full". scan_layers: decoder layers under
    lax.scan (compile time flat in depth; the pod configs turn it on, the CPU default is off)."""
    return ConfigDict(dict(preset=preset, hf_path=hf_path, dtype=dtype, param_dtype=param_dtype,
                           remat_policy=remat_policy, scan_layers=scan_layers, attention_impl=attention_impl,
                           remat=remat))


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
                progress: bool = True, resume: str = "auto") -> ConfigDict:
    """`resume`: "auto" continues the workdir's checkpoints only if they were written under the same
    training config (train/resume.py), else refuses and lists the changed keys; "force" continues
    them anyway (the changes are logged)."""
    return ConfigDict(dict(steps=steps, batch_size=batch_size, grad_accum_steps=grad_accum_steps, seq_len=seq_len,
                           log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every, seed=seed,
                           progress=progress, resume=resume))


def distributed_block() -> ConfigDict:
    """Multi-host start-up; TPU pods and SLURM need nothing here (JAX discovers its peers)."""
    return ConfigDict(dict(enabled=False, coordinator_address="", num_processes=0, process_id=0))


def llama_config(model_cfg: ConfigDict) -> LlamaConfig:
    numerics = dict(dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype, remat=bool(model_cfg.get("remat", False)),
                    remat_policy=model_cfg.get("remat_policy", "none"),
                    scan_layers=bool(model_cfg.get("scan_layers", False)),
                    attention_impl=model_cfg.get("attention_impl", "xla"))
    if model_cfg.get("hf_path"):
        path = Path(model_cfg.hf_path) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"model.hf_path: no config.json in {model_cfg.hf_path}")
        return hf_llama_config(path, **numerics)
    return get_config(model_cfg.preset, **numerics)


def hf_llama_config(config_json: str | Path, **numerics) -> LlamaConfig:
    """The architecture in a Hugging Face config.json; InputError naming the file and the key
    when it is not valid JSON or lacks a field."""
    hf = read_json_object(config_json)
    try:
        return LlamaConfig.from_hf(hf, **numerics)
    except KeyError as e:
        raise InputError(config_json, "missing required field", key=str(e.args[0])) from None
    except (TypeError, ValueError) as e:
        raise InputError(config_json, str(e)) from None


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


class ConfigKeyError(KeyError):
    """An override names a field the config does not have; the message lists the fields there are."""

    def __str__(self) -> str:
        return str(self.args[0])


def resolve_field(cfg: ConfigDict, key: str) -> tuple[ConfigDict, str]:
    """(block, field name) of a dotted key; ConfigKeyError naming the block and its fields if absent."""
    parts = key.split(".")
    node, where = cfg, "the config"
    for i, part in enumerate(parts):
        if not isinstance(node, ConfigDict) or part not in node:
            fields = ", ".join(sorted(node.keys())) if isinstance(node, ConfigDict) else "none (not a block)"
            raise ConfigKeyError(f"no field {part!r} in {where}; fields are: {fields}")
        if i < len(parts) - 1:
            node, where = node[part], ".".join(parts[:i + 1])
    return node, parts[-1]


def apply_overrides(cfg: ConfigDict, overrides: Sequence[str]) -> ConfigDict:
    for item in overrides:
        item = item[len("--config."):] if item.startswith("--config.") else item
        if "=" not in item:
            raise ValueError(f"config override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            node, leaf = resolve_field(cfg, key)
        except ConfigKeyError as e:
            raise ConfigKeyError(f"--config.{key}: {e}") from None
        if isinstance(node[leaf], str):
            value = raw  # a string field keeps the text as given (e.g. tokenizer_pad=0, a token id)
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        node[leaf] = value  # ConfigDict type-checks the assignment
    return cfg


def diagnose_override_flags(argv: Sequence[str], default_config: str | None = None) -> str | None:
    """Why absl could not apply the `--config.key=value` flags in argv: the first key the config
    file does not have, as a one-line message (None when every key exists)."""
    path = default_config
    for arg in argv:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if not path:
        return None
    try:
        cfg = load_config_file(path if Path(path).is_file() else path.split(":", 1)[0])
    except Exception:  # noqa: BLE001 - the config file's own error is absl's to report
        return None
    for arg in argv:
        if arg.startswith("--config."):
            key = arg[len("--config."):].split("=", 1)[0]
            try:
                resolve_field(cfg, key)
            except ConfigKeyError as e:
                return f"--config.{key}: {e}"
    return None
