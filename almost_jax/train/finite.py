"""Stop training at the first non-finite loss or gradient norm, before anything is written.

A diverged run (NaN/inf) must never save a checkpoint, final params or a manifest, and so never
rotates the last finite checkpoints out. `FiniteCheck` does that without slowing the step:

* after each step it reads the *previous* step's loss and grad_norm (two scalars). The current
  step is already queued on the device, so the device never idles for this read (lag one;
  measured on 2 CPU cores, tiny model at ~18 ms/step: 0.98x the steps/s without the check,
  within the run-to-run spread);
* before every save, and at the end, it reads the current step's scalars and checks that every
  param is finite (one jitted reduction per save: an update can turn finite grads into inf params).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

WATCHED = ("loss", "grad_norm")


class NonFiniteError(FloatingPointError):
    """Training produced a NaN/inf: names the step and the metric(s); nothing was saved for it."""

    def __init__(self, step: int, values: Mapping[str, float], note: str = ""):
        self.step, self.values = step, dict(values)
        shown = ", ".join(f"{k}={v}" for k, v in self.values.items())
        super().__init__(f"non-finite {' and '.join(self.values)} at step {step} ({shown}); no checkpoint, params or "
                         f"manifest were written for it{note}. Lower optimizer.lr, or check the data and "
                         f"model.dtype")


def check_finite(step: int, metrics: Mapping[str, Any], note: str = "") -> None:
    """Raise NonFiniteError if any of the watched scalars in `metrics` is NaN or inf (reads only those)."""
    values = jax.device_get({k: metrics[k] for k in WATCHED if k in metrics})
    bad = {k: float(values[k]) for k in WATCHED if k in values and not math.isfinite(float(values[k]))}
    if bad:
        raise NonFiniteError(step, bad, note)


@jax.jit
def all_finite(tree) -> jax.Array:
    """One boolean: every floating-point leaf of `tree` is free of NaN/inf."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class FiniteCheck:
    """`after_step(step, metrics)` once per step (checks the step before); `verify(step, params)`
    before writing anything (checks this step and the params). `checkpointer` only names the
    last finite checkpoint in the error."""

    def __init__(self, checkpointer=None):
        self.checkpointer = checkpointer
        self._pending: Optional[tuple[int, dict]] = None

    def _note(self) -> str:
        latest = self.checkpointer.latest_step() if self.checkpointer is not None else None
        return "" if latest is None else (f"; the last checkpoint, step {latest} in "
                                          f"{self.checkpointer.directory}, is kept")

    def after_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._pending is not None:
            check_finite(*self._pending, note=self._note())
        self._pending = (step, {k: metrics[k] for k in WATCHED if k in metrics})

    def verify(self, step: int, params=None) -> None:
        if self._pending is not None:
            check_finite(*self._pending, note=self._note())
            self._pending = None
        if params is not None and not bool(np.asarray(all_finite(params))):
            raise NonFiniteError(step, {"params": float("nan")}, self._note())
