"""`fit`: everything a learner needs around its loss function, written once.

Mesh from config -> sharded train state (fresh, from given params, or resumed from the job's own
checkpoints) -> jitted step -> loop with metrics, eval, checkpoints and preemption -> final
params saved as a model checkpoint. A learner (pretraining, SFT, reward model, DPO...) passes
only its loss, its data and how to initialise its params.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import jax
import numpy as np
from ml_collections import ConfigDict

from almost_jax.checkpoints.orbax_io import save_params
from almost_jax.data.lm_data import RowBatches
from almost_jax.models.llama import abstract_or_init
from almost_jax.parallel import batch_sharding, mesh_context
from almost_jax.train.loop import LoopConfig, run_loop
from almost_jax.train.metrics import MetricsWriter
from almost_jax.train.setup import build_setup
from almost_jax.train.step import make_train_step


def fit(cfg: ConfigDict, model_cfg, loss_fn: Callable, rows: dict[str, np.ndarray], workdir: str | Path,
        init_params, head: str = "lm", head_kwargs: Optional[dict] = None,
        eval_fn: Optional[Callable] = None, desc: str = "train"):
    """Train `loss_fn` on `rows` for cfg.train.steps; returns (params, last metrics).

    init_params: used when there is no checkpoint to resume from: a function returning freshly
    initialised params (traced under jit), or a tree of loaded params. eval_fn(params) -> dict of scalars, run every cfg.train.eval_every steps.
    """
    workdir = Path(workdir)
    tcfg = cfg.train
    boxed = abstract_or_init(model_cfg, jax.random.key(0), head, **(head_kwargs or {}))
    setup = build_setup(cfg, boxed, workdir, int(tcfg.steps), keep_checkpoints=int(tcfg.get("keep_checkpoints", 2)))
    with mesh_context(setup.mesh, setup.rules):
        state, _ = setup.restore_or_create(init_params, int(tcfg.seed), desc)
        batches = RowBatches(rows, int(tcfg.batch_size), seed=int(tcfg.seed))
        batch_sh = {k: batch_sharding(setup.mesh, v.ndim) for k, v in rows.items()}
        step_fn = make_train_step(loss_fn, setup.shardings, batch_sh, setup.schedule, int(tcfg.grad_accum_steps))
        tokens = int(tcfg.batch_size) * int(next(iter(rows.values())).shape[-1])
        writer = MetricsWriter(workdir)
        wrapped_eval = (lambda s: eval_fn(s.params)) if eval_fn else None
        try:
            state, metrics = run_loop(state, step_fn, batches, setup.mesh, LoopConfig.from_config(tcfg, tokens),
                                      setup.checkpointer, writer, wrapped_eval, desc=desc)
        finally:
            writer.close()
            setup.checkpointer.close()
    save_params(workdir / "params", state.params)
    return state.params, metrics
