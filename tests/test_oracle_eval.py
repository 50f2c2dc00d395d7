"""Oracle evaluation statistics: CIs, paired differences, agreement of synthetic pairs and of an RM
within self-play turns."""
import numpy as np
import pytest

from almost_jax.data.schemas import Candidate, ComparisonRecord, DialogueRecord, DialogueTurn, Provenance
from almost_jax.evaluation.oracle_eval import mean_ci, paired_difference, score_replies
from almost_jax.evaluation.oracle_pairs import agreement_breakdown, cluster_ci, within_turn_agreement


def test_mean_ci_is_the_normal_approximation():
    x = np.random.default_rng(0).random(400)
    mean, half = mean_ci(x)
    assert mean == pytest.approx(x.mean())
    assert half == pytest.approx(1.96 * x.std(ddof=1) / 20)


def test_paired_difference_removes_the_shared_task_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.random(300)
    a, b = difficulty + 0.05 + 0.01 * rng.standard_normal(300), difficulty
    fams = ["x", "y"] * 150
    paired = paired_difference(a, b, fams)
    mean, half = paired["all"]
    assert mean == pytest.approx(0.05, abs=0.01) and half < 0.01  # unpaired CIs would be ~0.05 wide
    assert set(paired) == {"all", "x", "y"}


def test_score_replies_reports_per_family_cis():
    out = score_replies(["Sort 4 1 3.", "Sort 4 1 3.", "Uppercase: cat dog.", "Uppercase: cat dog."],
                        ["1 3 4", "4 1 3", "CAT DOG", "CAT DOG"], ["sort", "sort", "upper", "upper"])
    assert out["score_sort"] == 0.5 and out["score_sort_ci"] > 0.5
    assert out["score_upper"] == 1.0 and out["score_upper_ci"] == 0.0


def test_cluster_ci_counts_clusters_not_pairs():
    values = [1.0] * 50 + [0.0] * 50
    independent = cluster_ci(values, range(100))
    clustered = cluster_ci(values, [0] * 50 + [1] * 50)  # two clusters: no idea of the mean
    assert independent[0] == clustered[0] == 0.5
    assert independent[2] - independent[1] < 0.3 < clustered[2] - clustered[1]


def _pair(query, chosen, rejected, setups, family, qid):
    return ComparisonRecord(prompt=f"\n\nHuman: {query}", chosen=chosen, rejected=rejected, id=qid,
                            provenance=Provenance(chosen_setup=setups[0], rejected_setup=setups[1]),
                            meta={"family": family, "query_id": qid})


def test_agreement_breakdown_per_setup_pair_and_family():
    pairs = [_pair("Sort 4 1 3.", "1 3 4", "4 1 3", "AB", "sort", "q0"),         # oracle agrees
             _pair("Sort 5 2 8.", "5 2 8", "2 5 8", "AB", "sort", "q1"),         # oracle disagrees
             _pair("Uppercase: cat.", "CAT", "CAT", "CD", "upper", "q2"),        # a tie
             _pair("Uppercase: dog.", "DOG", "dog", "CD", "upper", "q3")]
    out = agreement_breakdown(pairs)
    assert out["all"]["pairs"] == 4 and out["all"]["agrees_decisive"] == pytest.approx(2 / 3)
    assert out["A>B"]["agrees_decisive"] == 0.5 and out["A>B/sort"]["pairs"] == 2
    assert out["C>D"]["ties"] == 0.5 and out["C>D"]["agrees_decisive"] == 1.0
    assert out["upper"] == out["C>D/upper"]


def _turn(query, cands):
    return [DialogueTurn(speaker="human", text=query),
            DialogueTurn(speaker="assistant", text=max(cands, key=lambda c: c[1])[0],
                         candidates=[Candidate(text=t, score=s) for t, s in cands])]


def test_within_turn_agreement_and_pick_against_random():
    dialogues = [
        DialogueRecord(id="d0", turns=_turn("Sort 4 1 3.", [("1 3 4", 2.0), ("4 1 3", 0.0), ("1 4 3", 1.0)])
                       + _turn("Hello, how are you?", [("fine", 1.0), ("ok", 0.0)])),  # not a task: skipped
        DialogueRecord(id="d1", turns=_turn("Uppercase: cat.", [("cat", 3.0), ("CAT", 1.0), ("CAT", 1.0)])),
    ]
    out = within_turn_agreement(dialogues)
    assert out["turns"] == 2
    # d0: 3 decisive pairs, all ranked as the oracle does; d1: 2 decisive pairs, both wrong.
    assert out["pairs"] == 5 and out["agreement"]["mean"] == pytest.approx(3 / 5)
    assert out["agreement_by_family"]["sort"]["mean"] == 1.0
    assert out["agreement_by_family"]["upper"]["mean"] == 0.0
    sort_gain = 1.0 - np.mean([1.0, 0.0, 1 / 3])
    upper_gain = 0.0 - 2 / 3
    assert out["pick_minus_random"]["mean"] == pytest.approx((sort_gain + upper_gain) / 2)


def test_rm_agreement_per_family_and_pair_type():
    from almost_jax.evaluation.oracle_pairs import rm_agreement
    pairs = [_pair("Sort 4 1 3.", "1 3 4", "4 1 3", "AB", "sort", "q0"),
             _pair("Sort 4 1 3.", "1 3 4", "1 4 3", "BA", "sort", "q0"),
             _pair("Uppercase: dog.", "DOG", "dog", "CD", "upper", "q1")]
    out = rm_agreement(pairs, [1.0, 0.0, 2.0], [0.0, 1.0, 2.0])
    assert out["all"]["mean"] == pytest.approx(1.5 / 3)
    assert out["A-B"]["mean"] == 0.5 and out["A-B"]["n"] == 2  # the winner's side does not split types
    assert out["upper"]["mean"] == 0.5  # an RM tie counts half


def test_family_ladder_differences_and_table():
    from almost_jax.pipeline.stages import family_table, ladder_differences
    rng = np.random.default_rng(0)
    fams = ["sort", "upper"] * 100
    base = rng.random(200)
    per_task = {}
    for mode in ("greedy", "sampled"):
        for shots in (0, 3):
            per_task[("S", mode, shots)] = base
            per_task[("M", mode, shots)] = base + 0.1
            # L beats M on sort only; on upper it is M's equal
            per_task[("L", mode, shots)] = base + 0.1 + np.where(np.asarray(fams) == "sort", 0.1, 0.0)
    paired, not_above = ladder_differences(per_task, fams)
    assert paired["L-M_sampled_3shot"]["sort"][0] == pytest.approx(0.1)
    assert sorted(not_above) == sorted(f"L-M {m} {k}-shot upper" for m in ("greedy", "sampled") for k in (0, 3))
    table = {f"{m}_{mode}_{k}shot": {"score": 0.5, "score_ci": 0.01, "score_sort": 0.4, "score_sort_ci": 0.02,
                                      "score_upper": 0.6, "score_upper_ci": 0.02}
             for m in "SML" for mode in ("greedy", "sampled") for k in (0, 3)}
    md = family_table(table, paired, (0, 3), ("greedy", "sampled"), ["sort", "upper"])
    assert md.count("\n") == 2 + 3 * 2 * 2
    assert "| sort | sampled | 3 | 0.400 ± 0.020 | 0.400 ± 0.020 | 0.400 ± 0.020 | +0.100 ± 0.000 | +0.100 ± 0.000 |" in md


def test_oracle_relabelled_orders_by_the_oracle_and_drops_ties():
    """The control's training pairs: swapped where the oracle disagrees with the prior, ties dropped."""
    from almost_jax.evaluation.oracle_pairs import oracle_relabelled, oracle_agreement
    pairs = [_pair("Sort 4 1 3.", "1 3 4", "4 1 3", "AB", "sort", "q0"),         # oracle agrees: kept
             _pair("Sort 5 2 8.", "5 2 8", "2 5 8", "AB", "sort", "q1"),         # oracle disagrees: swapped
             _pair("Uppercase: cat.", "CAT", "CAT", "CD", "upper", "q2")]        # a tie: dropped
    out = oracle_relabelled(pairs)
    assert [(p.chosen, p.rejected) for p in out] == [("1 3 4", "4 1 3"), ("2 5 8", "5 2 8")]
    assert (out[1].provenance.chosen_setup, out[1].provenance.rejected_setup) == ("B", "A")
    assert all(p.provenance.filters["label"] == "oracle (control)" for p in out)
    assert oracle_agreement(out)["oracle_agrees"] == 1.0
