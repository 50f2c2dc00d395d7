"""Resuming a training job from its own checkpoints only under the config it was written with.

Each checkpoint's meta carries `training_config(cfg)`: every config field that changes what
training computes (model, optimizer, data, steps, seeds, init weights, learner settings), flat
as `"block.key": value`, and its hash. Before resuming, `check_resume` compares it with the
current config and, on any difference, refuses with the list of changed keys, unless
`train.resume="force"`. A job whose checkpoint is already at or past its last step says so
instead of "resuming" nothing and re-stamping its outputs with a new config.

`restored_values` is the rule for values a checkpoint carries for a config field (PPO's adaptive
KL coefficient): the checkpoint's value continues the run, unless the config's value of that
field changed since the checkpoint was written (an explicit command-line value): then the
config's value wins and the log says so. A restored value never silently overrides it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Mapping

import jax
from ml_collections import ConfigDict

log = logging.getLogger(__name__)

RESUME_MODES = ("auto", "force")

# Fields that do not change what training computes: where things are written, how often the loop
# logs/evaluates/checkpoints, and the device layout (a checkpoint restores onto any mesh).
NOT_TRAINING = ("workdir", "name", "mesh", "distributed", "export_hf", "eval_batch_size", "train.log_every",
                "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints", "train.progress",
                "train.resume", "model.remat", "model.remat_policy", "model.attention_impl",
                # the RL job's equivalents, and what only evaluates or picks among saved policies
                "resume", "rl.checkpoint_every", "rl.progress", "rl.keep_policy_every", "rl.kl_budget", "gold")


class ResumeError(RuntimeError):
    """A checkpoint that this config must not continue from; says why and what to do."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, (ConfigDict, Mapping)):
        out = {}
        for key in sorted(node.keys()):
            out.update(_flatten(node[key], f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(node) if isinstance(node, tuple) else node}


def training_config(cfg: ConfigDict, exclude: tuple[str, ...] = NOT_TRAINING) -> dict[str, Any]:
    """{dotted key: JSON value} of the fields that change training (everything but `exclude`)."""
    flat = json.loads(json.dumps(_flatten(cfg), default=str))
    return {k: v for k, v in flat.items() if not any(k == e or k.startswith(e + ".") for e in exclude)}


def config_meta(cfg: ConfigDict) -> dict[str, Any]:
    """What a checkpoint records about the config it was written under."""
    fields = training_config(cfg)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {"config_hash": digest, "training_config": fields}


def changed_keys(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, config's value)} for every key that differs or exists in one only."""
    missing = "<absent>"
    return {k: (saved.get(k, missing), current.get(k, missing)) for k in sorted(set(saved) | set(current))
            if saved.get(k, missing) != current.get(k, missing)}


def resume_mode(cfg: ConfigDict) -> str:
    mode = cfg.train.get("resume", "auto") if "train" in cfg else cfg.get("resume", "auto")
    if mode not in RESUME_MODES:
        raise ValueError(f"train.resume must be one of {RESUME_MODES}, got {mode!r}")
    return mode


def check_resume(meta: Mapping[str, Any], cfg: ConfigDict, where: str) -> dict[str, tuple[Any, Any]]:
    """Refuse (ResumeError) to continue from a checkpoint written under another training config,
    unless train.resume="force"; returns the changed keys (empty when the config matches)."""
    saved = meta.get("training_config")
    if saved is None:
        log.warning("%s: checkpoint records no config (written by an older almost_jax): cannot check it", where)
        return {}
    changed = changed_keys(saved, training_config(cfg))
    if not changed:
        return {}
    lines = "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    if resume_mode(cfg) != "force":
        raise ResumeError(f"{where} was written under another config; changed since:\n{lines}\n"
                          f"Use a new workdir, or --config.train.resume=force to continue these checkpoints "
                          f"under the new values.")
    log.warning("%s: resuming under a changed config (train.resume=force):\n%s", where, lines)
    return changed


def check_not_finished(step: int, total_steps: int, changed: Mapping[str, Any], where: str) -> bool:
    """True when the checkpoint is already the job's last step (nothing left to train). A
    checkpoint past the last step, or at it under a changed config, cannot give the result the
    config asks for: ResumeError."""
    if step < total_steps:
        return False
    if step > total_steps or changed:
        raise ResumeError(f"{where}: the latest checkpoint is step {step}, at or past train.steps={total_steps}: "
                          f"there is nothing to train under this config, and its outputs are not rewritten. "
                          f"Use a new workdir (or a larger train.steps).")
    log.info("%s: already finished (checkpoint at step %d of %d): nothing to train", where, step, total_steps)
    return True


def restored_values(meta: Mapping[str, Any], cfg: ConfigDict, keys: Mapping[str, str]) -> dict[str, Any]:
    """Values a checkpoint carries for config fields, e.g. {"kl_coef": "ppo.kl_coef"} (meta key ->
    dotted config key). Each is the checkpoint's value, unless the config's value of that field
    differs from the one the checkpoint was written under: then the config's value wins."""
    saved = meta.get("training_config") or {}
    current = training_config(cfg, exclude=())
    out = {}
    for meta_key, cfg_key in keys.items():
        if cfg_key not in current:
            raise KeyError(f"restored_values: the config has no field {cfg_key!r}")
        if meta_key not in meta:
            out[meta_key] = current[cfg_key]
        elif cfg_key in saved and saved[cfg_key] != current[cfg_key]:
            log.warning("%s: using the config's %r, not the checkpoint's %r (the config changed since the "
                        "checkpoint was written)", cfg_key, current[cfg_key], meta[meta_key])
            out[meta_key] = current[cfg_key]
        else:
            out[meta_key] = meta[meta_key]
    return out


def resume_or_init(checkpointer, abstract_state, cfg: ConfigDict, total_steps: int, desc: str):
    """(state, meta, finished) from the newest readable checkpoint of `checkpointer`
    (checkpoints.orbax_io.Checkpointer), if the config it was written under matches (see
    `check_resume`); (None, {}, False) when there is none. `finished`: nothing is left to train."""
    if checkpointer.latest_step() is None:
        return None, {}, False
    where = f"{desc}: {checkpointer.directory}"
    changed: dict = {}
    state, meta = checkpointer.restore(abstract_state,
                                       accept_meta=lambda m: changed.update(check_resume(m, cfg, where)))
    step = int(jax.device_get(state.step))
    log.info("%s: resumed from step %d (%s)", desc, step, checkpointer.directory)
    return state, meta, check_not_finished(step, total_steps, changed, where)
