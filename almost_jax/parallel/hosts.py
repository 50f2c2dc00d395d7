"""What the hosts of a pod must agree on, outside the jitted programs.

The data jobs (queries, comparisons, self-play) run the same sampling loop on every host (SPMD:
each call is one program over all devices), so every host must build the same work list from
the outputs of an earlier, interrupted run, and only one host may append to an output file.
"""
from __future__ import annotations

import hashlib

import jax
import numpy as np


def is_primary() -> bool:
    return jax.process_index() == 0


def check_same_on_all_hosts(state: str, what: str) -> None:
    """Raise on every host (not hang on some) when the hosts see different resume state, e.g.
    an output directory on a host-local disk that only process 0 has written to."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    digest = np.frombuffer(hashlib.sha256(state.encode()).digest(), np.uint8)
    everyone = np.asarray(multihost_utils.process_allgather(digest))
    differ = [i for i, d in enumerate(everyone) if not np.array_equal(d, everyone[0])]
    if differ:
        raise RuntimeError(f"processes {differ} see different {what} than process 0: put the job's output "
                           f"directory on a filesystem every host shares (e.g. a gcsfuse mount, launch/tpu_run.sh "
                           f"--mount=BUCKET)")


class _Discard:
    def write(self, record) -> None:
        del record

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def primary_appender(path):
    """A JsonlAppender on process 0; elsewhere a sink that drops records (all hosts compute the
    same records, so one writer keeps the file free of duplicates)."""
    from almost_jax.data.schemas import JsonlAppender
    return JsonlAppender(path) if is_primary() else _Discard()
