"""Logical axis names -> mesh axes: the sharding rules table.

Parameters and activations are annotated with the logical names on the left; this table (or the
`mesh.rules` override in a job config) decides where each lands. Pure data parallel, FSDP, and
FSDP + tensor parallel are all the same table over different mesh shapes: an axis of size 1
simply does nothing.
"""
from __future__ import annotations

from typing import Sequence

Rules = tuple[tuple[str, object], ...]

DEFAULT_RULES: Rules = (
    # parameters
    ("layers", None),  # the stacked-layer axis of scanned params (each step reads one layer)
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_kv_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def rules_from_config(overrides: Sequence | None = None) -> Rules:
    """DEFAULT_RULES with per-name overrides, e.g. [["embed", None]] to replicate embeddings."""
    if not overrides:
        return DEFAULT_RULES
    table = dict(DEFAULT_RULES)
    for item in overrides:
        if len(item) != 2:
            raise ValueError(f"a sharding rule is [logical_name, mesh_axes]; got {item!r}")
        name, axes = item
        table[name] = tuple(axes) if isinstance(axes, list) else axes
    return tuple(table.items())
