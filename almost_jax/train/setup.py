"""What every trainer builds before its loop, written once: the mesh and logical rules from the
config, optimizer and schedule, the state's shardings, the job's Checkpointer, and the state itself,
restored from the job's own checkpoints (only under the config they were written with:
train/resume.py) or created. `fit`, the RL job and the benchmarks build
through it, so a supervised learner, an on-policy learner and a measurement set up alike.
"""
from __future__ import annotations

import dataclasses
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
from almost_jax.train.resume import config_meta, resume_or_init
from almost_jax.train.state import TrainState, abstract_state, create_sharded_state

@dataclasses.dataclass
class TrainSetup:
    mesh: Mesh
    rules: Rules
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    shardings: TrainState  # NamedShardings of every state leaf
    checkpointer: Checkpointer
    abstract: TrainState  # boxed shapes of the state (what a checkpoint restores onto)
    cfg: ConfigDict  # the job's config: checkpoints record it, a resume is checked against it
    total_steps: int  # optimizer updates the job runs (a checkpoint at this step is a finished run)
    extra: Optional[dict] = None  # TrainState.extra of a fresh state

    @property
    def param_shardings(self):
        return self.shardings.params

    @property
    def meta(self) -> dict:
        """What every checkpoint of this job records about its config (run_loop's `meta`)."""
        return config_meta(self.cfg)

    def restore_or_create(self, init: Any, seed: int, desc: str = "train") -> tuple[TrainState, dict, bool]:
        """(state, meta, finished): the job's newest readable checkpoint with its meta, if written under
        this config (a changed config raises ResumeError listing the keys, unless
        train.resume=force), or a fresh state, {} and False. `finished`: the checkpoint is already the
        last step. `init` is what `create_sharded_state` takes (a function of no arguments or a tree
        of loaded params); call inside `mesh_context(self.mesh, self.rules)`."""
        state, meta, finished = resume_or_init(self.checkpointer, with_shardings(self.abstract, self.shardings),
                                               self.cfg, self.total_steps, desc)
        if state is None:
            state = create_sharded_state(init, self.tx, self.shardings, seed, self.extra)
        return state, meta, finished


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
                      cfg, int(total_steps), extra)
