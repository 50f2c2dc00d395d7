"""Deterministic, host-sharded, resumable batches for language-model training.

The batch for step `s` is a pure function of (rows, seed, s): every host computes the same global
permutation and takes only its own slice, and a resumed job asks for step `s` again and gets the
same rows. No iterator state needs checkpointing beyond the step.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import jax
import numpy as np

from almost_jax.data.errors import InputError, note_skipped

log = logging.getLogger(__name__)


def read_text_corpus(path: str | Path, on_error: str = "raise") -> list[str]:
    """The "text" of every line of a JSONL corpus; a bad line (a cut-off last one included) is an
    InputError with its line number, or with on_error="skip" a warning and a count in the
    job's manifest (data.errors.note_skipped)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    docs, skipped = [], 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
                if not isinstance(text, str):
                    raise TypeError(f"'text' is a {type(text).__name__}")
                docs.append(text)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                cut = "" if line.endswith("\n") else "the last line is cut off (the file looks truncated); "
                error = InputError(path, f"{cut}not a JSON object with a 'text' string ({e})", line=lineno)
                if on_error == "raise":
                    raise error from None
                log.warning("skipping %s", error)
                skipped += 1
    note_skipped(path, skipped)
    return docs


def pack_documents(docs: Iterable[Sequence[int]], seq_len: int, eos_id: int, bos_id: int | None = None) -> np.ndarray:
    """Concatenate token documents (each followed by EOS, optionally preceded by BOS) and cut the
    stream into rows of seq_len; the ragged tail is dropped."""
    stream: list[int] = []
    for doc in docs:
        if bos_id is not None:
            stream.append(bos_id)
        stream.extend(doc)
        stream.append(eos_id)
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"corpus has {len(stream)} tokens: fewer than one row of seq_len={seq_len}")
    return np.asarray(stream[: n * seq_len], dtype=np.int32).reshape(n, seq_len)


class RowBatches:
    """`batches(step)` -> this host's slice of the global batch (dict of [B/hosts, ...] arrays).

    `rows` is a dict of equally long arrays (e.g. input_ids, attention_mask, loss_mask).
    Epoch e uses permutation `default_rng([seed, e])`; leftover rows of an epoch are skipped.
    """

    def __init__(self, rows: dict[str, np.ndarray], global_batch: int, seed: int = 0, shuffle: bool = True,
                 process_index: int | None = None, process_count: int | None = None):
        self.rows = rows
        self.n = len(next(iter(rows.values())))
        self.global_batch = global_batch
        self.seed, self.shuffle = seed, shuffle
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if global_batch % self.process_count:
            raise ValueError(f"global batch {global_batch} is not divisible by {self.process_count} hosts")
        if self.n < global_batch:
            raise ValueError(f"only {self.n} examples for a global batch of {global_batch}")
        self.steps_per_epoch = self.n // global_batch
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                          else np.arange(self.n))
            self._perm_epoch = epoch
        return self._perm

    def global_indices(self, step: int) -> np.ndarray:
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        return perm[within * self.global_batch:(within + 1) * self.global_batch]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        idx = self.global_indices(step)
        per_host = self.global_batch // self.process_count
        idx = idx[self.process_index * per_host:(self.process_index + 1) * per_host]
        return {k: v[idx] for k, v in self.rows.items()}


def lm_rows(packed: np.ndarray) -> dict[str, np.ndarray]:
    ones = np.ones_like(packed, dtype=np.int32)
    return {"input_ids": packed, "attention_mask": ones, "loss_mask": ones}
