"""Per-row PRNG keys: a sample depends on what it answers, never on where it sits in a batch.

The key of a prompt is derived from names, not from batch positions:

    prompt key = fold_in(fold_in(key(seed), h(stream)), h(prompt id))
    sample key = fold_in(prompt key, sample index)        (the k-th of cfg.n samples)
    token key  = fold_in(sample key, decode step)         (inside the jitted decode loop)

with h(s) = the first 31 bits of sha256(s). A data job passes its seed, a stream name per
sampler setup / role ("A", "assistant", "queries") and stable ids (query ids), so a killed and
resumed job draws exactly the samples an uninterrupted one draws, and two setups sampling the
same prompt with the same model draw independent samples.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import jax
import numpy as np


def name_hash(name: object) -> int:
    """A stable 31-bit integer for a name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(str(name).encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


@jax.jit
def _fold_rows(base_data: jax.Array, id_hashes: jax.Array) -> jax.Array:
    base = jax.random.wrap_key_data(base_data)
    return jax.random.key_data(jax.vmap(jax.random.fold_in, (None, 0))(base, id_hashes))


def prompt_keys(seed: int, stream: str, ids: Sequence[object]) -> np.ndarray:
    """Raw key data [len(ids), ...] (uint32) of each prompt id's key (see the module doc)."""
    base = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), name_hash(stream)))
    return np.asarray(_fold_rows(base, np.asarray([name_hash(i) for i in ids], np.uint32)))
