"""The training loop every learner shares: steps, progress, metrics, eval, checkpoints, preemption.

Resumption is exact: the train state (params, optimizer, step, PRNG, learner extras) is
checkpointed with the loop step (`data_step` in the meta) and the data is a pure function of the
step (`batch_fn(step)`), so a restarted job continues with the same batches it would have seen.
A step's "batch" is whatever its step function takes: rows of arrays (placed on the mesh by
default) or, for on-policy RL, the step's prompts (`place` leaves them on the host).
"""
from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from almost_jax.checkpoints.orbax_io import Checkpointer
from almost_jax.parallel.shard import shard_batch
from almost_jax.train.metrics import MetricsWriter

log = logging.getLogger(__name__)


class Preempted(RuntimeError):
    """Raised after a checkpoint was written in response to SIGTERM / a preemption notice."""


class PreemptionGuard:
    """Whether a job should checkpoint and stop now: call `requested(checkpointer, step)` once per step.

    One host: a Python SIGTERM handler sets a flag that the loop checks after each step.

    Multi-host: no Python handler. jax.distributed.initialize installed its own, which feeds the
    preemption sync behind `Checkpointer.reached_preemption`: every host stops at the same step,
    even when only one got the signal. A Python handler would replace it, and a host stopping on
    its own leaves the others blocked in the next step's collectives.
    """

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if jax.process_count() > 1:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: rely on orbax's preemption sync only
            self._previous = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: will checkpoint at the end of this step and stop")
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def requested(self, checkpointer: Optional[Checkpointer], step: int) -> bool:
        return self.raised or (checkpointer is not None and jax.process_count() > 1
                               and checkpointer.reached_preemption(step))


@dataclass
class LoopConfig:
    total_steps: int
    log_every: int = 10
    eval_every: int = 0  # 0 = only at the end
    checkpoint_every: int = 100
    tokens_per_step: int = 0  # for throughput; 0 = not shown
    progress: bool = True

    @classmethod
    def from_config(cls, train_cfg, tokens_per_step: int = 0) -> "LoopConfig":
        return cls(total_steps=int(train_cfg.steps), log_every=int(train_cfg.get("log_every", 10)),
                   eval_every=int(train_cfg.get("eval_every", 0)),
                   checkpoint_every=int(train_cfg.get("checkpoint_every", 100)), tokens_per_step=tokens_per_step,
                   progress=bool(train_cfg.get("progress", True)))


def run_loop(state, step_fn: Callable, batch_fn: Callable[[int], Any], mesh, loop: LoopConfig,
             checkpointer: Optional[Checkpointer] = None, writer: Optional[MetricsWriter] = None,
             eval_fn: Optional[Callable] = None, meta: Optional[dict] = None, desc: str = "train", *,
             start: Optional[int] = None, place: Optional[Callable] = None, prefix: str = "train/"):
    """Run steps `start` (default `state.step`) .. `loop.total_steps - 1`: `step_fn(state, place(batch_fn(step)))`
    -> (state, metrics). By default `batch_fn(step)` returns this host's slice of the global batch
    as numpy arrays and `place` makes it a global batch on `mesh`. Metrics are written under
    `prefix`. Returns the final state and last metrics."""
    start = int(jax.device_get(state.step)) if start is None else int(start)
    place = place or (lambda batch: shard_batch(batch, mesh))
    metrics_host: dict = {}
    t_last, steps_since = time.perf_counter(), 0
    bar = tqdm(total=loop.total_steps, initial=start, desc=desc, disable=not loop.progress or jax.process_index() != 0,
               dynamic_ncols=True)

    def save(step, force=False):
        if checkpointer is not None:
            checkpointer.save(step, state, meta={**(meta or {}), "data_step": step}, force=force)

    with PreemptionGuard() as guard:
        for step in range(start, loop.total_steps):
            state, metrics = step_fn(state, place(batch_fn(step)))
            steps_since += 1
            done = step + 1
            if done % loop.log_every == 0 or done == loop.total_steps:
                metrics_host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                dt = time.perf_counter() - t_last
                metrics_host["steps_per_s"] = steps_since / dt
                if loop.tokens_per_step:
                    metrics_host["tokens_per_s"] = steps_since * loop.tokens_per_step / dt
                t_last, steps_since = time.perf_counter(), 0
                if writer:
                    writer.write(done, metrics_host, prefix=prefix)
                bar.set_postfix({k: f"{metrics_host[k]:.4g}" for k in ("loss", "tokens_per_s") if k in metrics_host})
                if not loop.progress:
                    log.info("%s step %d/%d %s", desc, done, loop.total_steps,
                             " ".join(f"{k}={v:.4g}" for k, v in metrics_host.items()))
            bar.update(1)
            if eval_fn is not None and loop.eval_every and done % loop.eval_every == 0 and done < loop.total_steps:
                ev = eval_fn(state)
                if writer:
                    writer.write(done, ev, prefix="eval/")
                log.info("%s eval at step %d: %s", desc, done, ev)
            if guard.requested(checkpointer, done):
                save(done, force=True)
                if checkpointer:
                    checkpointer.wait()
                bar.close()
                raise Preempted(f"stopped at step {done} after a termination signal; checkpoint saved")
            if loop.checkpoint_every and done % loop.checkpoint_every == 0:
                save(done)
    bar.close()
    if checkpointer is not None and checkpointer.latest_step() != loop.total_steps and start < loop.total_steps:
        save(loop.total_steps, force=True)
        checkpointer.wait()
    if eval_fn is not None:
        ev = eval_fn(state)
        metrics_host.update({f"eval_{k}": float(np.asarray(v)) for k, v in ev.items()})
        if writer:
            writer.write(loop.total_steps, ev, prefix="eval/")
    return state, metrics_host
