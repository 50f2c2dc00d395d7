"""Metrics you can plot: TensorBoard event files plus a metrics.jsonl, written by process 0 only."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import numpy as np


class MetricsWriter:
    def __init__(self, logdir: str | Path, use_tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.logdir = Path(logdir)
        self._tb = None
        if self.enabled:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.logdir / "metrics.jsonl", "a", buffering=1)
            if use_tensorboard:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(str(self.logdir), flush_secs=10)

    def write(self, step: int, metrics: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        clean = {f"{prefix}{k}": float(np.asarray(v)) for k, v in metrics.items() if np.ndim(v) == 0}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl (a truncated last line from a killed job is ignored)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
