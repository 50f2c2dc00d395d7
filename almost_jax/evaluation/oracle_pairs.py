"""Gold-labelled comparison pairs: how well synthetic feedback and reward models agree with the oracle.

* `oracle_agreement(comparisons)`: on the synthetic pairs themselves, the fraction the oracle
  also prefers (ties reported apart): the ceiling for an RM trained on them;
  `agreement_breakdown` gives it per setup pair (A>B, ...), per family and per both, with CIs.
* `oracle_relabelled(comparisons)`: the CONTROL's training pairs (the oracle as labeller); only
  `reward_labels="oracle"` (configs/mini_control.py) uses it.
* `gold_pairs(...)`: every pair of distinct-scoring responses to the same held-out task, labelled
  by the oracle, for measuring an RM on pairs it never saw.
* `within_turn_agreement(dialogues)`: the RM's ranking of the candidates of one self-play turn
  (N samples of one model) against the oracle's, and its pick against a random pick.

Pairs that share a task (or a turn) are not independent, so CIs come from a bootstrap over tasks
(turns): `cluster_ci`. Apart from the marked control, all of this is evaluation: nothing here feeds training.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Sequence

import numpy as np

from almost_jax.data.schemas import ComparisonRecord, Provenance
from almost_jax.miniworld import oracle


def query_of(prompt: str) -> str:
    return prompt.rsplit("Human:", 1)[-1].strip()


def cluster_ci(values: Sequence[float], clusters: Sequence, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and a 95% percentile-bootstrap CI that resamples
    whole clusters (e.g. all pairs of one task), so correlated pairs are not counted as independent."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    _, idx = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    sums, counts = np.bincount(idx, weights=x), np.bincount(idx).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boot = sums[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(x.mean()), float(low), float(high)


def _pair_scores(c) -> tuple[float, float]:
    q = query_of(c.prompt)
    return oracle.score(q, c.chosen), oracle.score(q, c.rejected)


def oracle_agreement(comparisons) -> dict:
    agree = ties = 0
    for c in comparisons:
        sc, sr = _pair_scores(c)
        agree += sc > sr
        ties += sc == sr
    n = len(comparisons)
    decisive = n - ties
    return {"pairs": n, "oracle_agrees": agree / n if n else float("nan"), "oracle_ties": ties / n if n else float("nan"),
            "oracle_agrees_decisive": agree / decisive if decisive else float("nan")}


def agreement_breakdown(comparisons) -> dict:
    """{group: {pairs, ties, agrees_decisive, ci}} for the groups "all", each setup pair ("A>B"),
    each family and each "A>B/family"; `ci` is the 95% CI of agrees_decisive (bootstrap over queries)."""
    groups = defaultdict(list)
    for c in comparisons:
        sc, sr = _pair_scores(c)
        pair = f"{c.provenance.chosen_setup}>{c.provenance.rejected_setup}"
        family = c.meta.get("family", "?")
        item = (sc, sr, c.meta.get("query_id", c.id))
        for g in ("all", pair, family, f"{pair}/{family}"):
            groups[g].append(item)
    out = {}
    for g, items in sorted(groups.items()):
        decisive = [(sc > sr, q) for sc, sr, q in items if sc != sr]
        mean, low, high = cluster_ci([a for a, _ in decisive], [q for _, q in decisive])
        out[g] = {"pairs": len(items), "ties": 1 - len(decisive) / len(items), "agrees_decisive": mean,
                  "ci": [low, high]}
    return out


def oracle_relabelled(comparisons) -> list[ComparisonRecord]:
    """CONTROL ONLY (configs/mini_control.py): the same pairs ordered by the oracle instead of the
    synthetic prior (swapped where the oracle prefers the rejected reply: `filters["flipped"]`;
    dropped where it ties), to measure what the RM / self-play / SFT / DPO machinery does with a
    perfect labeller; also SPA's small labelled seed (pipeline/preference_stages.py). Never used by
    the default pipeline: there the oracle only evaluates."""
    out = []
    for c in comparisons:
        sc, sr = _pair_scores(c)
        if sc == sr:
            continue
        chosen, rejected, prov = (c.chosen, c.rejected, c.provenance) if sc > sr else \
            (c.rejected, c.chosen, Provenance(c.provenance.rejected_setup, c.provenance.chosen_setup, dict(c.provenance.filters)))
        out.append(ComparisonRecord(prompt=c.prompt, chosen=chosen, rejected=rejected, id=c.id, meta=dict(c.meta),
                                    provenance=Provenance(prov.chosen_setup, prov.rejected_setup,
                                                          {**prov.filters, "label": "oracle (control)",
                                                           "flipped": bool(sc < sr)})))
    return out


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
                                        meta={"family": q.meta.get("family"), "query_id": q.id}))
    return out


def rm_agreement(pairs, chosen_scores, rejected_scores) -> dict:
    """An RM's agreement with the labels of `pairs` (e.g. gold pairs: the oracle's), overall, per
    family and per pair type ("A-B": replies of setups A and B, whichever won), with bootstrap CIs
    over queries; an RM tie counts 1/2."""
    groups = defaultdict(lambda: ([], []))
    for p, c, r in zip(pairs, chosen_scores, rejected_scores):
        hit = 0.5 if c == r else float(c > r)
        cluster = p.meta.get("query_id", p.id)
        pair_type = "-".join(sorted((p.provenance.chosen_setup, p.provenance.rejected_setup)))
        for g in ("all", p.meta.get("family", "?"), pair_type):
            groups[g][0].append(hit)
            groups[g][1].append(cluster)
    return {g: _ci_entry(v, q) for g, (v, q) in sorted(groups.items())}


def within_turn_agreement(dialogues) -> dict:
    """The RM's choices among the candidates of each self-play assistant turn, against the oracle.

    dialogues: DialogueRecords whose assistant turns keep their RM-scored candidates (selection
    "rm"). Turns whose user message is not a mini-world task are skipped. Returns `agreement`
    (over candidate pairs with distinct oracle scores, an RM tie counting 1/2), overall and per
    family, with bootstrap CIs over turns; and `pick_minus_random`: the oracle score of the RM's
    pick minus the mean over the turn's candidates (what a random pick gets on average).
    """
    agree, agree_turn, agree_family = [], [], []
    gain, gain_turn, gain_family, picks, randoms = [], [], [], [], []
    for d in dialogues:
        history = []
        for k, turn in enumerate(d.turns):
            if turn.speaker == "assistant" and len(turn.candidates or []) > 1 and history:
                task = oracle.task_from_prompt(history[-1])
                if task is not None:
                    cands = turn.candidates
                    gold = [oracle.score(task, c.text) for c in cands]
                    rm = [c.score for c in cands]
                    turn_id = f"{d.id}/{k}"
                    for i, j in itertools.combinations(range(len(cands)), 2):
                        if gold[i] != gold[j]:
                            agree.append(0.5 if rm[i] == rm[j] else float((rm[i] > rm[j]) == (gold[i] > gold[j])))
                            agree_turn.append(turn_id)
                            agree_family.append(task.family)
                    best = int(np.argmax(rm))
                    picks.append(gold[best])
                    randoms.append(float(np.mean(gold)))
                    gain.append(gold[best] - float(np.mean(gold)))
                    gain_turn.append(turn_id)
                    gain_family.append(task.family)
            if turn.speaker == "human":
                history.append(turn.text)
    out = {"turns": len(gain), "pairs": len(agree)}
    out["agreement"] = _ci_entry(agree, agree_turn)
    out["pick_minus_random"] = _ci_entry(gain, gain_turn)
    out["pick_score"], out["random_pick_score"] = float(np.mean(picks)) if picks else float("nan"), \
        float(np.mean(randoms)) if randoms else float("nan")
    fams = np.asarray(agree_family)
    out["agreement_by_family"] = {f: _ci_entry(np.asarray(agree)[fams == f], np.asarray(agree_turn)[fams == f])
                                  for f in sorted(set(agree_family))}
    return out


def _ci_entry(values, clusters) -> dict:
    mean, low, high = cluster_ci(values, clusters)
    return {"mean": mean, "ci": [low, high], "n": len(values)}


def mean_oracle_score(queries, responses: dict[str, str]) -> float:
    scores = [oracle.score(q.prompt, responses[q.id]) for q in queries if q.id in responses]
    return float(np.mean(scores)) if scores else float("nan")
