"""The mini world's query sets (RM comparisons, self-play, RL): disjoint, every family in each.

Sets are built in the order given (a list of ``(name, size)``, never a dict's key order), and each
family gets an equal share of every set (the remainder goes to the first families). Instructions
come from the training split only and no instruction string is in two sets.

A family with a large instruction space (sort, upper) gets distinct instructions throughout. A
small one (capital: 30 facts x 4 templates, about 96 training instructions; harmful about 112;
one-digit add about 240) cannot fill every set without repeats, so its distinct instructions are
split across the sets first (each set at least half an equal share, the rest in proportion to
the set's size; never more than the set needs), and each set then cycles through its own part
to fill its share. Repeated instructions in a set are answered by fresh samples each time.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from almost_jax.miniworld import tasks as T


def distinct_tasks(family: str, limit: int, seed: int, split: str = "train", patience: int = 5000) -> list[T.Task]:
    """Up to ``limit`` tasks with distinct instructions, drawn in a seeded order; stops early when
    ``patience`` draws in a row bring no new instruction (the family's space is exhausted)."""
    stream = T.iter_tasks(family, random.Random(f"distinct/{family}/{seed}"), split=split)
    out, seen, misses = [], set(), 0
    while len(out) < limit and misses < patience:
        task = next(stream)
        if task.instruction in seen:
            misses += 1
            continue
        misses = 0
        seen.add(task.instruction)
        out.append(task)
    return out


def family_shares(size: int, families: Sequence[str]) -> dict[str, int]:
    """An equal share of ``size`` per family; the remainder goes to the first families."""
    base, extra = divmod(size, len(families))
    return {f: base + (i < extra) for i, f in enumerate(families)}


def split_pool(pool_size: int, needs: Sequence[int]) -> list[int]:
    """How many of a family's ``pool_size`` distinct instructions each set gets (sum <= pool_size).

    Enough for every need: each set gets its need. Otherwise each set first gets
    min(need, half an equal share), and the rest is shared in proportion to what each still needs.
    """
    if sum(needs) <= pool_size:
        return list(needs)
    floor = pool_size // (2 * len(needs))
    got = [min(n, floor) for n in needs]
    rest, left = pool_size - sum(got), [n - g for n, g in zip(needs, got)]
    total_left = sum(left)
    extra = [math.floor(rest * l / total_left) for l in left]
    for i in sorted(range(len(needs)), key=lambda i: -left[i])[: rest - sum(extra)]:  # rounding leftovers
        extra[i] += 1
    return [min(n, g + e) for n, g, e in zip(needs, got, extra)]


def build_query_sets(sets: Sequence[tuple[str, int]], families: Sequence[str], seed: int) -> dict[str, list[T.Task]]:
    """{set name: tasks} in the order of ``sets``; each set shuffled, each holds every family's share.

    Raises if a set would miss a family (a set smaller than the number of families, or a family
    with no training instruction).
    """
    names = [name for name, _ in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"query set names repeat: {names}")
    shares = {name: family_shares(int(size), families) for name, size in sets}
    out: dict[str, list[T.Task]] = {name: [] for name in names}
    for family in families:
        needs = [shares[name][family] for name in names]
        pool = distinct_tasks(family, sum(needs), seed)
        start = 0
        for name, need, n_distinct in zip(names, needs, split_pool(len(pool), needs)):
            part = pool[start:start + n_distinct]
            start += n_distinct
            if need and not part:
                raise ValueError(f"query set {name!r} gets no {family!r} instruction ({len(pool)} in the training split)")
            out[name].extend(part[i % len(part)] for i in range(need))
    for i, name in enumerate(names):
        random.Random(f"{seed}/{i}/{name}").shuffle(out[name])
        missing = set(families) - {t.family for t in out[name]}
        if missing:
            raise ValueError(f"query set {name!r} has no {sorted(missing)} task: make it at least "
                             f"{len(families)} queries")
    return out
