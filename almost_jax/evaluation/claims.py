"""The report's claims: each one an estimate with its 95% CI and a verdict at 95%.

A policy comparison is a paired difference on the same held-out tasks. Policies trained with
several seeds give scores of shape [seeds, tasks]; the difference is averaged over seeds per task
and its CI comes from the spread over tasks (normal approximation, `oracle_eval.mean_ci`), so it
covers the tasks' variance but treats the seeds as fixed. A claim therefore holds at 95% only when
its CI lies on the claimed side of the threshold *and* every seed's own mean difference does too.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from almost_jax.evaluation.oracle_eval import mean_ci

HOLDS, NOT_SHOWN, CONTRADICTED = "holds at 95%", "not shown at 95%", "contradicted at 95%"


def verdict(low: float, high: float, threshold: float = 0.0, per_seed: Sequence[float] = ()) -> str:
    """HOLDS when the CI [low, high] lies above `threshold` and so does every per-seed estimate;
    CONTRADICTED when the CI lies below it; NOT_SHOWN otherwise."""
    if low > threshold and all(x > threshold for x in per_seed):
        return HOLDS
    if high < threshold:
        return CONTRADICTED
    return NOT_SHOWN


def paired_difference(a: np.ndarray, b: np.ndarray, families: Optional[Sequence[str]] = None) -> dict:
    """a, b: oracle scores [seeds, tasks] on the same tasks ([1, tasks] broadcasts, e.g. a baseline
    without seeds; equal seed counts pair seed i with seed i). Returns mean, 95% `ci`, `per_seed`
    means and, given `families`, the same per family."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1] or (a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0])):
        raise ValueError(f"paired_difference needs the same tasks and matching seeds, got {a.shape} and {b.shape}")
    d = a - b
    per_task = d.mean(0)
    mean, half = mean_ci(per_task)
    out = {"mean": mean, "ci": [mean - half, mean + half], "per_seed": [float(x) for x in d.mean(1)]}
    if families is not None:
        fams = np.asarray(families)
        out["per_family"] = {}
        for fam in sorted(set(families)):
            m, h = mean_ci(per_task[fams == fam])
            out["per_family"][fam] = {"mean": m, "ci": [m - h, m + h]}
    return out


def claim(text: str, estimate: float, ci: Sequence[float], threshold: float = 0.0, per_seed: Sequence[float] = (),
          note: str = "") -> dict:
    """One row of the report's claims table."""
    low, high = float(ci[0]), float(ci[1])
    return {"claim": text, "estimate": float(estimate), "ci": [low, high], "threshold": threshold,
            "per_seed": [float(x) for x in per_seed], "verdict": verdict(low, high, threshold, per_seed), "note": note}
