"""Gold-labelled comparison pairs: how well synthetic feedback agrees with the oracle.

* `oracle_agreement(comparisons)`: on the synthetic pairs themselves, the fraction the oracle
  also prefers (ties reported apart): the ceiling for an RM trained on them.
* `gold_pairs(...)`: every pair of distinct-scoring responses to the same held-out task, labelled
  by the oracle, for measuring an RM on pairs it never saw.
"""
from __future__ import annotations

import itertools

import numpy as np

from almost_jax.data.schemas import ComparisonRecord, Provenance
from almost_jax.miniworld import oracle


def query_of(prompt: str) -> str:
    return prompt.rsplit("Human:", 1)[-1].strip()


def oracle_agreement(comparisons) -> dict:
    agree = ties = 0
    for c in comparisons:
        q = query_of(c.prompt)
        sc, sr = oracle.score(q, c.chosen), oracle.score(q, c.rejected)
        agree += sc > sr
        ties += sc == sr
    n = len(comparisons)
    decisive = n - ties
    return {"pairs": n, "oracle_agrees": agree / n if n else float("nan"), "oracle_ties": ties / n if n else float("nan"),
            "oracle_agrees_decisive": agree / decisive if decisive else float("nan")}


def gold_pairs(queries, responses: dict[str, dict[str, str]], min_gap: float = 1e-6) -> list[ComparisonRecord]:
    """responses: setup -> {query id -> response}. Pairs whose oracle scores differ by > min_gap."""
    out = []
    for q in queries:
        cands = [(name, r[q.id]) for name, r in responses.items() if r.get(q.id)]
        seen = set()
        for (na, ra), (nb, rb) in itertools.combinations(cands, 2):
            if ra == rb or (ra, rb) in seen:
                continue
            seen.add((ra, rb))
            sa, sb = oracle.score(q.prompt, ra), oracle.score(q.prompt, rb)
            if abs(sa - sb) <= min_gap:
                continue
            (wn, w, ws), (ln, l, ls) = sorted([(na, ra, sa), (nb, rb, sb)], key=lambda x: -x[2])
            out.append(ComparisonRecord(prompt=f"\n\nHuman: {q.prompt}", chosen=w, rejected=l, id=f"{q.id}-{len(out)}",
                                        provenance=Provenance(chosen_setup=wn, rejected_setup=ln,
                                                              filters={"label": "oracle", "gap": round(ws - ls, 4)}),
                                        meta={"family": q.meta.get("family")}))
    return out


def mean_oracle_score(queries, responses: dict[str, str]) -> float:
    scores = [oracle.score(q.prompt, responses[q.id]) for q in queries if q.id in responses]
    return float(np.mean(scores)) if scores else float("nan")
