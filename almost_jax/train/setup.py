"""What every trainer builds before its loop, written once: the mesh and logical rules from the
config, optimizer and schedule, the state's shardings, the job's Checkpointer, and the state itself,
restored from the job's own checkpoints or created. `fit`, the RL job and the benchmarks build
through it, so a supervised learner, an on-policy learner and a measurement set up alike.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from almost_jax.checkpoints.orbax_io import Checkpointer
from almost_jax.parallel import MeshConfig, logical_shardings, make_mesh, rules_from_config
from almost_jax.parallel.rules import Rules
from almost_jax.parallel.shard import with_shardings
from almost_jax.train.optim import make_optimizer
from almost_jax.train.state import TrainState, abstract_state, create_sharded_state

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainSetup:
    mesh: Mesh
    rules: Rules
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    shardings: TrainState  # NamedShardings of every state leaf
    checkpointer: Checkpointer
    abstract: TrainState  # boxed shapes of the state (what a checkpoint restores onto)
    extra: Optional[dict] = None  # TrainState.extra of a fresh state

    @property
    def param_shardings(self):
        return self.shardings.params

    def restore_or_create(self, init: Any, seed: int, desc: str = "train") -> tuple[TrainState, dict]:
        """(state, meta): the job's latest checkpoint with its meta, or a fresh state and {}. `init` is
        what `create_sharded_state` takes (a function of no arguments or a tree of loaded params);
        call inside `mesh_context(self.mesh, self.rules)`."""
        if self.checkpointer.latest_step() is not None:
            state, meta = self.checkpointer.restore(with_shardings(self.abstract, self.shardings))
            log.info("%s: resumed from step %d (%s)", desc, int(meta.get("data_step", state.step)),
                     self.checkpointer.directory)
            return state, meta
        return create_sharded_state(init, self.tx, self.shardings, seed, self.extra), {}


def build_setup(cfg: ConfigDict, boxed_params: Any, workdir: str | Path, total_steps: int,
                extra: Optional[dict] = None, keep_checkpoints: int = 2) -> TrainSetup:
    """From a job config's `mesh` and `optimizer` blocks. `boxed_params`: abstract params with their
    logical axes (`models.llama.abstract_or_init`, or a dict of such trees for several models);
    `total_steps`: optimizer updates the schedule spans; `extra`: host floats for TrainState.extra."""
    mesh = make_mesh(MeshConfig.from_config(cfg.mesh))
    rules = rules_from_config(cfg.mesh.get("rules"))
    tx, schedule = make_optimizer(cfg.optimizer, total_steps)
    abstract = abstract_state(boxed_params, tx, extra)
    checkpointer = Checkpointer(Path(workdir) / "checkpoints", max_to_keep=keep_checkpoints)
    return TrainSetup(mesh, rules, tx, schedule, logical_shardings(abstract, mesh, rules), checkpointer, abstract,
                      extra)
