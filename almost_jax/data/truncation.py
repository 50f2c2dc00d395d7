"""Inputs cut to fit a length limit are counted and reported, never cut silently.

Every place that left-truncates token ids (the sampler's prompts, reward-model inputs) keeps one
`Truncations` counter: the first cut logs a warning saying what was cut and how much was kept,
later ones are counted, and the counts go to the job's manifest / report (`as_dict`).
"""
from __future__ import annotations

import logging
from typing import Sequence

log = logging.getLogger(__name__)


class Truncations:
    """Counts of inputs seen, inputs cut, and tokens dropped, for inputs named `what`."""

    def __init__(self, what: str):
        self.what = what
        self.inputs = self.truncated = self.tokens_dropped = 0

    def keep_last(self, ids: Sequence[int], limit: int) -> list[int]:
        """`ids` cut to its last `limit` tokens (left truncation), counted."""
        self.inputs += 1
        ids = list(ids)
        if len(ids) <= limit:
            return ids
        if self.truncated == 0:
            log.warning("%s of %d tokens is longer than the limit of %d: kept its last %d tokens (further "
                        "truncations are counted and reported at the end)", self.what, len(ids), limit, limit)
        self.truncated += 1
        self.tokens_dropped += len(ids) - limit
        return ids[-limit:]

    def as_dict(self) -> dict:
        return {"inputs": self.inputs, "truncated": self.truncated, "tokens_dropped": self.tokens_dropped}

    def report(self) -> None:
        """A closing warning when anything was cut (call at the end of a job or a pass)."""
        if self.truncated:
            log.warning("%s: %d of %d were left-truncated (%d tokens dropped in all)", self.what, self.truncated,
                        self.inputs, self.tokens_dropped)
