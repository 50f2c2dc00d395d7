"""From ranked sampler setups to (chosen, rejected) pairs: ALMoST's rubric and heuristic filter.

The rubric is an ordered list of setup names, best first; an entry that is a list is a tie group.
Pair construction reproduces the official code's `get_comparison` exactly:
  * survivors (non-empty, not BAD) are sorted by rank (stable: rubric order within a tie);
  * ordered pairs (i, j), i before j, are visited as itertools.combinations would;
  * a setup, and a rank, may be "chosen" at most once per query; ties are never paired;
  * heuristic length filter: skip the pair when the chosen response is shorter than the rejected
    one AND shorter than mean - std/2 of the query's response lengths (population std, over every
    response not marked BAD, as the official code computes it).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Optional, Sequence, Union

import numpy as np

Rubric = Sequence[Union[str, Sequence[str]]]


def rank_of(rubric: Rubric) -> dict[str, int]:
    ranks = {}
    for rank, entry in enumerate(rubric):
        for name in ([entry] if isinstance(entry, str) else entry):
            if name in ranks:
                raise ValueError(f"setup {name!r} appears twice in the rubric")
            ranks[name] = rank
    return ranks


def flatten(rubric: Rubric) -> list[str]:
    return [n for entry in rubric for n in ([entry] if isinstance(entry, str) else entry)]


@dataclasses.dataclass
class Pair:
    chosen_setup: str
    rejected_setup: str
    chosen: str
    rejected: str
    chosen_long_enough: bool


@dataclasses.dataclass
class PairStats:
    queries: int = 0
    queries_lt2_survivors: int = 0
    pairs: int = 0
    skipped_by_length_filter: int = 0
    skipped_ties: int = 0


def long_enough(responses: Mapping[str, Optional[str]]) -> dict[str, bool]:
    """len >= mean - std/2 over this query's responses that are not BAD (None = BAD)."""
    lengths = [len(r) for r in responses.values() if r is not None]
    if not lengths:
        return {k: False for k in responses}
    threshold = float(np.mean(lengths)) - float(np.std(lengths)) / 2
    return {k: (r is not None and len(r) >= threshold) for k, r in responses.items()}


def build_pairs(responses: Mapping[str, Optional[str]], rubric: Rubric, length_filter: bool = True,
                stats: Optional[PairStats] = None) -> list[Pair]:
    """responses: setup name -> response text, or None when the response was judged BAD."""
    ranks = rank_of(rubric)
    stats = stats if stats is not None else PairStats()
    stats.queries += 1
    unknown = set(responses) - set(ranks)
    if unknown:
        raise ValueError(f"setups {sorted(unknown)} have responses but are not in the rubric")
    order = [n for n in flatten(rubric) if n in responses]
    survivors = [n for n in order if responses[n] is not None and responses[n].strip()]
    survivors.sort(key=lambda n: ranks[n])  # stable: rubric order within a tie group
    if len(survivors) < 2:
        stats.queries_lt2_survivors += 1
        return []
    ok_length = long_enough(responses)
    pairs, used_setups, used_ranks = [], set(), set()
    for better, worse in itertools.combinations(survivors, 2):
        if better in used_setups or ranks[better] in used_ranks:
            continue
        rb, rw = responses[better], responses[worse]
        if length_filter and len(rb) < len(rw) and not ok_length[better]:
            stats.skipped_by_length_filter += 1
            continue
        if ranks[better] == ranks[worse]:
            stats.skipped_ties += 1
            continue
        pairs.append(Pair(better, worse, rb, rw, ok_length[better]))
        used_setups.add(better)
        used_ranks.add(ranks[better])
    stats.pairs += len(pairs)
    return pairs
