"""Orbax checkpoints: train state + data position, saved atomically, restored onto any mesh.

Orbax writes each step into `<step>.orbax-checkpoint-tmp*` and renames it when every host has
finished, so a killed job never leaves a half-written step that a restart would pick up.
Restoring takes abstract arrays that carry the *target* shardings, so a checkpoint written on
one mesh shape restores straight onto another (no gather on one host).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with two items: `state` (arrays) and `meta` (JSON:
    data position, config hash, anything small)."""

    def __init__(self, directory: str | Path, max_to_keep: Optional[int] = 3, save_interval_steps: int = 1,
                 async_save: bool = False):
        self.directory = Path(directory).absolute() if "://" not in str(directory) else directory
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                               create=True, enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: Optional[dict] = None, force: bool = False) -> bool:
        saved = self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                meta=ocp.args.JsonSave(meta or {})), force=force)
        if saved:
            log.info("checkpoint: saving step %d to %s", step, self.directory)
        return saved

    def restore(self, abstract_state: Any, step: Optional[int] = None) -> tuple[Any, dict]:
        """abstract_state: a tree of jax.ShapeDtypeStruct with `.sharding` set (see
        `train.state.with_shardings`)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["meta"] or {})

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()

    def reached_preemption(self, step: int) -> bool:
        """True on every host at the same step once any host got a preemption notice (multi-host)."""
        return self.manager.reached_preemption(step)


def save_params(path: str | Path, params: Any) -> None:
    """A model-only checkpoint (a stage's output), atomic like the train checkpoints."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params, force=True)
        ckptr.wait_until_finished()


def load_params(path: str | Path, abstract_params: Any = None) -> Any:
    """Restore params saved by `save_params`; with `abstract_params` (ShapeDtypeStructs with
    shardings) they land sharded on the mesh, otherwise on the default device."""
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no model checkpoint at {path}")
    with ocp.StandardCheckpointer() as ckptr:
        if abstract_params is None:
            meta = ckptr.metadata(path)
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            # An explicit device: without one orbax reuses the saved sharding, which names devices
            # this process may not have (params written by a pod, read on one host).
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract_params = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        return ckptr.restore(path, abstract_params)
