"""Orbax checkpoints: train state + data position, saved atomically, restored onto any mesh.

Orbax writes each step into `<step>.orbax-checkpoint-tmp*` and renames it when every host has
finished, so a killed job never leaves a half-written step that a restart would pick up.
Restoring takes abstract arrays that carry the *target* shardings, so a checkpoint written on
one mesh shape restores straight onto another (no gather on one host).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

from almost_jax.data.errors import first_line

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No checkpoint step of a run could be read; names each step and why."""


class _Unreadable(Exception):
    """One checkpoint step's files cannot be read (the message is the one-line reason)."""


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

    def restore(self, abstract_state: Any, step: Optional[int] = None,
                accept_meta: Optional[Callable[[dict], None]] = None) -> tuple[Any, dict]:
        """(state, meta) of `step`, or of the newest step that can be read.

        abstract_state: a tree of jax.ShapeDtypeStruct with `.sharding` set (see
        `parallel.shard.with_shardings`). accept_meta(meta) runs before the arrays are read and may
        raise to refuse the checkpoint (a config check); that error is passed on as is. A step whose
        files cannot be read (deleted or truncated data, bad metadata) is reported in one line and
        the previous step is tried; once one restores, the unreadable newer steps are moved aside
        to `<step>.unreadable` so that training can write those steps again.
        """
        steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
        unreadable: list[tuple[int, str]] = []
        for s in steps:
            try:
                state, meta = self._read(s, abstract_state, accept_meta)
            except _Unreadable as e:
                unreadable.append((s, str(e)))
                log.warning("checkpoint %s cannot be read (%s)%s", self._step_dir(s), e,
                            "; trying the previous step" if s != steps[-1] else "")
                continue
            if unreadable:
                self._set_aside([u for u, _ in unreadable])
                log.warning("checkpoint: restored step %d instead of %s", s, [u for u, _ in unreadable])
            return state, meta
        raise CheckpointError(f"no readable checkpoint in {self.directory}: "
                              + "; ".join(f"step {u}: {why}" for u, why in unreadable)
                              + ". Move or delete the damaged step(s) to start over from scratch.")

    def _read(self, step: int, abstract_state: Any, accept_meta) -> tuple[Any, dict]:
        """(state, meta) of one step; _Unreadable when its files cannot be read (any error of the
        reads: deleted or truncated data, bad metadata), accept_meta's own error passed on."""
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001
            raise _Unreadable(first_line(e)) from e
        if accept_meta is not None:
            accept_meta(dict(meta or {}))
        try:
            args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            state = self.manager.restore(step, args=args)["state"]
        except Exception as e:  # noqa: BLE001
            raise _Unreadable(first_line(e)) from e
        return state, dict(meta or {})

    def _step_dir(self, step: int):
        return epath.Path(self.directory) / str(step)

    def _set_aside(self, steps: list[int]) -> None:
        """Rename unreadable step dirs to `<step>.unreadable` (kept for inspection, no longer a step)."""
        if jax.process_index() == 0:
            for s in steps:
                src = self._step_dir(s)
                dst = src.parent / f"{s}.unreadable"
                if dst.exists():
                    dst.rmtree()
                src.rename(dst)
                log.warning("checkpoint: moved unreadable %s to %s", src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("almost_jax_checkpoint_set_aside")
        self.manager.reload()

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
