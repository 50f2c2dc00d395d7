"""Simulated pairwise annotators: win-rate and standard error by hand, position randomisation that
undoes a judge's position bias and maps outcomes back, label noise at its rate and fixed per pair,
the prompted judge's reading of label probabilities, the RM / oracle judges on chat-format prompts,
and ComparisonRecords labelled by an annotator (the oracle only as a marked control)."""
import numpy as np
import pytest

from almost_jax.evaluation.annotators import Annotator, label_pairs, pair_draws, prompted_judge
from almost_jax.evaluation.policy_benchmarks import JudgePrompt
from almost_jax.evaluation.winrate import oracle_judge, rm_judge, win_rate


def truth_judge(prompts, first, second):
    """Prefers the longer reply; equal lengths tie. Position-free."""
    lf, ls = np.array([len(x) for x in first]), np.array([len(x) for x in second])
    return np.where(lf > ls, 1.0, np.where(ls > lf, 0.0, 0.5))


def first_judge(prompts, first, second):
    """Always prefers whatever is shown first: pure position bias."""
    return np.ones(len(first))


def pairs(n, seed=0):
    rs = np.random.RandomState(seed)
    a = ["x" * int(k) for k in rs.randint(1, 9, n)]
    b = ["y" * int(k) for k in rs.randint(1, 9, n)]
    return [f"\n\nHuman: q{i}" for i in range(n)], a, b


def test_win_rate_and_standard_error_by_hand():
    outcomes = iter([np.array([1.0, 0.0, 0.5, 1.0, 1.0])])
    # mean 0.7; deviations .3 -.7 -.2 .3 .3 -> sum of squares 0.8, / (n-1) = 0.2, std 0.4472, / sqrt(5) = 0.2
    mean, se = win_rate(lambda p, a, b: next(outcomes), ["p"] * 5, ["a"] * 5, ["b"] * 5)
    assert mean == pytest.approx(0.7) and se == pytest.approx(0.2)
    mean, se = win_rate(lambda p, a, b: np.array([1.0, 1.0]), ["p"] * 2, ["a"] * 2, ["b"] * 2)
    assert (mean, se) == (1.0, 0.0)


def test_draws_are_fixed_per_pair_id():
    d = pair_draws(3, ["a", "b", "c"])
    np.testing.assert_array_equal(pair_draws(3, ["c", "a"]), d[[2, 0]])  # any batch, any order
    assert not np.allclose(pair_draws(4, ["a"]), d[:1])  # another seed, other draws
    assert d.shape == (3, 2) and np.all((d >= 0) & (d < 1))


def test_random_order_cancels_position_bias_and_maps_outcomes_back():
    prompts, a, b = pairs(2000)
    biased = Annotator(first_judge, "first", randomize_order=False)
    assert win_rate(biased, prompts, a, b)[0] == 1.0  # shown in a fixed order, a always "wins"
    shuffled = Annotator(first_judge, "first", seed=1)
    out = shuffled(prompts, a, b)
    swapped = pair_draws(1, [str(i) for i in range(2000)])[:, 0] < 0.5
    np.testing.assert_array_equal(out, np.where(swapped, 0.0, 1.0))  # b shown first -> b wins -> 0 for a
    assert abs(out.mean() - 0.5) < 4 * 0.5 / np.sqrt(2000)
    # a position-free judge gives the true outcome whatever the order (the swap is undone)
    np.testing.assert_array_equal(Annotator(truth_judge, "t", seed=1)(prompts, a, b), truth_judge(prompts, a, b))


def test_label_noise_flips_at_its_rate_and_leaves_ties():
    prompts, a, b = pairs(4000, seed=1)
    truth = truth_judge(prompts, a, b)
    ids = [f"pair-{i}" for i in range(4000)]
    noisy = Annotator(truth_judge, "t", flip_prob=0.25, seed=2)(prompts, a, b, ids)
    decisive = truth != 0.5
    flipped = noisy[decisive] != truth[decisive]
    np.testing.assert_array_equal(noisy[decisive], np.where(flipped, 1 - truth[decisive], truth[decisive]))
    assert abs(flipped.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / decisive.sum()), flipped.mean()
    np.testing.assert_array_equal(noisy[~decisive], 0.5)
    expected = pair_draws(2, ids)[:, 1] < 0.25  # which pairs flip: their own draw, nothing else
    np.testing.assert_array_equal(flipped, expected[decisive])
    np.testing.assert_array_equal(Annotator(truth_judge, "t", flip_prob=1.0)(prompts, a, b)[decisive], 1 - truth[decisive])
    with pytest.raises(ValueError, match="flip_prob"):
        Annotator(truth_judge, "t", flip_prob=1.5)
    with pytest.raises(ValueError, match="unique"):
        Annotator(truth_judge, "t")(prompts[:2], a[:2], b[:2], ["same", "same"])


class FakeTextScorer:
    def __init__(self, logps):
        self.logps, self.prompts = logps, []

    def next_text_logprobs(self, prompts, answers):
        assert answers == [" A", " B"]
        self.prompts += prompts
        return np.array(self.logps[:len(prompts)])


def test_prompted_judge_reads_the_two_label_probabilities():
    prompt = JudgePrompt("Talk:\n{context}\nA: {response_a}\nB: {response_b}\nWhich?", "It is")
    scorer = FakeTextScorer([[-0.1, -2.0], [-3.0, -0.5], [-1.0, -1.0]])
    judge = prompted_judge(scorer, prompt)
    out = judge(["\n\nHuman: hi", "\n\nHuman: q\n\nAssistant: r\n\nHuman: more", "\n\nHuman: z"],
                ["r1", "r2", "r3"], ["s1", "s2", "s3"])
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.5])
    assert scorer.prompts[0] == "\n\nHuman: Talk:\nQuery: hi\nA: r1\nB: s1\nWhich?\n\nAssistant: It is"
    assert "Query: q\n\nResponse: r\n\nQuery: more\nA: r2" in scorer.prompts[1]  # labels renamed, not clashing


def test_rm_and_oracle_judges_take_chat_format_prompts():
    class Scorer:
        def __init__(self):
            self.seen = []

        def raw_scores(self, prompts, replies):
            self.seen += prompts
            return np.array([float(len(r)) for r in replies])

    s = Scorer()
    np.testing.assert_array_equal(rm_judge(s)(["\n\nHuman: q"] * 2, ["long", "a"], ["b", "bb"]), [1.0, 0.0])
    assert s.seen == ["\n\nHuman: q"] * 4  # as ComparisonRecord.prompt: no reformatting
    np.testing.assert_array_equal(oracle_judge()(["\n\nHuman: Compute 2 + 7."] * 3, ["9", "wrong", "9"],
                                                 ["8", "9", "9"]), [1.0, 0.0, 0.5])


def test_label_pairs_writes_the_annotators_pick():
    prompts = ["\n\nHuman: Compute 2 + 7."] * 4
    a, b = ["9", "wrong", "9", "8"], ["8", "9", "9", "8 "]
    records, counts = label_pairs(Annotator(oracle_judge(), "oracle", control=True), ["p0", "p1", "p2", "p3"],
                                  prompts, a, b, ("policy", "reference"))
    assert counts == {"pairs": 4, "identical": 1, "ties": 1, "labelled": 2, "a_preferred": pytest.approx(0.5)}
    assert [(r.id, r.chosen, r.rejected, r.provenance.chosen_setup) for r in records] == [
        ("p0", "9", "8", "policy"), ("p1", "9", "wrong", "reference")]
    assert all(r.provenance.filters["control"] is True and r.provenance.filters["label"] == "oracle" for r in records)
    records, _ = label_pairs(Annotator(truth_judge, "rm"), ["p0"], prompts[:1], ["long"], ["s"])
    assert "control" not in records[0].provenance.filters


def test_annotate_job_with_a_prompted_local_model(tmp_path):
    """The job end to end on a tiny random model: each label is the likelier of " A" / " B" under the
    judge prompt, shown in the pair's own random order."""
    import json

    from almost_jax.data.schemas import ComparisonRecord, Provenance, load_jsonl, write_jsonl_atomic
    from almost_jax.evaluation.annotators import load_prompted_judge
    from almost_jax.jobs import annotate
    from tests.test_policy_eval import TOKENIZER_VOCAB, build_tiny_world
    world = build_tiny_world(tmp_path)
    pairs = [ComparisonRecord(prompt=f"\n\nHuman: {q}", chosen=c, rejected=r, id=f"c{i}",
                              provenance=Provenance(chosen_setup="A", rejected_setup="B"))
             for i, (q, c, r) in enumerate([("what is the sum", "one two", "alpha"), ("hello", "help please", "beta"),
                                            ("the question", "true", "false")])]
    write_jsonl_atomic(tmp_path / "pairs.jsonl", pairs)
    cfg = annotate.annotate_config("prompted")
    cfg.update(dict(pairs=str(tmp_path / "pairs.jsonl"), output=str(tmp_path / "out" / "labelled.jsonl")))
    cfg.annotator.update(dict(seed=4, batch_size=4))
    cfg.annotator.prompted.update(dict(params=world["params"], tokenizer=str(world["tokenizer"]),
                                       allow_vocab_padding=256 - TOKENIZER_VOCAB, max_len=256))
    cfg.annotator.prompted.model.preset = "tiny"
    summary = annotate.run(cfg)
    out = load_jsonl(cfg.output, ComparisonRecord)
    assert summary["pairs"] == 3 and summary["labelled"] + summary["ties"] == 3
    # by hand: the judge on each pair in the order the annotator shows it
    judge = load_prompted_judge(cfg.annotator.prompted, 4)
    swap = pair_draws(4, ["c0", "c1", "c2"])[:, 0] < 0.5
    shown = [(p.rejected, p.chosen) if s else (p.chosen, p.rejected) for p, s in zip(pairs, swap)]
    first_wins = judge([p.prompt for p in pairs], [x for x, _ in shown], [y for _, y in shown])
    expected = [shown[i][0] if w == 1.0 else shown[i][1] for i, w in enumerate(first_wins) if w != 0.5]
    assert [r.chosen for r in out] == expected
    assert json.loads((tmp_path / "out" / "labelled.manifest.json").read_text())["judge"] == "prompted"
