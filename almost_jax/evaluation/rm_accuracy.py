"""Reward-model accuracy on comparison files in three formats.

* `comparisons`: almost_jax's JSONL (prompt, chosen, rejected, provenance).
* `hh`: Anthropic HH-RLHF JSONL, full `chosen`/`rejected` transcripts sharing a prefix.
* `static_hhh`: Static HHH (ALMoST's eval/data/hhh_eval.json), a JSON list with `type`; reported
  per type as well.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from almost_jax.data.errors import InputError
from almost_jax.data.schemas import (ComparisonRecord, load_jsonl, read_hh_pairs, read_jsonl, read_static_hhh,
                                     split_hh_pair)

REPLY_LABEL = "\n\nAssistant:"


def detect_format(path: str | Path) -> str:
    """"static_hhh" for a .json file, else from the first JSONL record's keys: "comparisons" (has
    provenance) or "hh" (chosen/rejected transcripts)."""
    path = Path(path)
    if path.suffix == ".json":
        return "static_hhh"
    first = next(iter(read_jsonl(path, None)), None)  # a bad first line: RecordError with its line
    if first is None:
        raise InputError(path, "no records: the file is empty")
    if "provenance" in first:
        return "comparisons"
    if {"chosen", "rejected"} <= set(first):
        return "hh"
    raise InputError(path, f"cannot tell the format from the first record's keys {sorted(first)}; expected "
                           f"almost_jax comparisons (with 'provenance') or HH pairs ('chosen', 'rejected')")


def load_triples(path: str | Path, fmt: str = "auto", on_error: str = "raise"):
    """(prompts, chosen, rejected, types) with prompts in the RM's `{prompt}` convention: the
    dialogue so far, without the final assistant label."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "comparisons":
        recs = load_jsonl(path, ComparisonRecord, on_error)
        return [r.prompt for r in recs], [r.chosen for r in recs], [r.rejected for r in recs], None
    items = read_static_hhh(path) if fmt == "static_hhh" else list(read_hh_pairs(path, on_error))
    prompts, chosen, rejected = [], [], []
    for i, it in enumerate(items):
        try:
            prompt, c, r = split_hh_pair(it)
        except ValueError as e:
            raise InputError(path, f"record {i + 1}: {e}") from None
        prompts.append(prompt[: -len(REPLY_LABEL)] if prompt.endswith(REPLY_LABEL) else prompt)
        chosen.append(c)
        rejected.append(r)
    types = [it.type for it in items] if fmt == "static_hhh" else None
    return prompts, chosen, rejected, types


def evaluate_file(scorer, path: str | Path, fmt: str = "auto", on_error: str = "raise") -> dict:
    prompts, chosen, rejected, types = load_triples(path, fmt, on_error)
    acc, rc, rr = scorer.accuracy(prompts, chosen, rejected)
    out = {"file": str(path), "n": len(prompts), "accuracy": acc, "mean_margin": float(np.mean(rc - rr)) if len(rc) else 0.0}
    if types:
        by = defaultdict(list)
        for t, a, b in zip(types, rc, rr):
            by[t].append(a > b)
        out["per_type"] = {t: float(np.mean(v)) for t, v in sorted(by.items())}
    return out


def format_table(results: list[dict]) -> str:
    rows = [("file", "n", "accuracy")]
    for r in results:
        rows.append((Path(r["file"]).name, str(r["n"]), f"{r['accuracy']:.3f}"))
        for t, a in r.get("per_type", {}).items():
            rows.append((f"  {t}", "", f"{a:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)
