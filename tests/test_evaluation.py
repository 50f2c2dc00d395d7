"""Evaluation modules: RM accuracy on its three file formats, oracle-labelled pairs, win-rates and
the report files."""
import json
import math

import jax
import numpy as np
import pytest

from almost_jax.data.errors import InputError
from almost_jax.data.schemas import ComparisonRecord, PromptRecord, Provenance, RecordError, write_jsonl_atomic
from almost_jax.data.tokenizer import Tokenizer
from almost_jax.evaluation import oracle_pairs, report, rm_accuracy, winrate


class Chars(Tokenizer):
    """ids 3.. are characters; 0 pad, 1 bos, 2 eos."""
    vocab_size, bos_id, eos_id, pad_id = 256, 1, 2, 0

    def _encode(self, text):
        return [3 + (ord(c) % 250) for c in text]

    def decode(self, ids):
        return "".join(chr(i - 3) for i in ids if i >= 3)


# ---------------------------------------------------------------- rm_accuracy

HH = [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Add 2 and 2.\n\nAssistant: 4",
       "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Add 2 and 2.\n\nAssistant: five"},
      {"chosen": "\n\nHuman: Sort 3 1.\n\nAssistant: 1 3", "rejected": "\n\nHuman: Sort 3 1.\n\nAssistant: no"}]


def _comparison(i, chosen, rejected):
    return ComparisonRecord(prompt=f"\n\nHuman: q{i}", chosen=chosen, rejected=rejected, id=str(i),
                            provenance=Provenance(chosen_setup="A", rejected_setup="B"))


def test_rm_accuracy_formats_and_prompt_convention(tmp_path):
    write_jsonl_atomic(tmp_path / "hh.jsonl", HH)
    write_jsonl_atomic(tmp_path / "c.jsonl", [_comparison(0, "good", "bad"), _comparison(1, "yes", "no")])
    (tmp_path / "hhh.json").write_text(json.dumps([dict(HH[0], type="honest"), dict(HH[1], type="helpful")]))
    assert [rm_accuracy.detect_format(tmp_path / n) for n in ("hh.jsonl", "c.jsonl", "hhh.json")] == \
        ["hh", "comparisons", "static_hhh"]
    prompts, chosen, rejected, types = rm_accuracy.load_triples(tmp_path / "hh.jsonl")
    # The RM's {prompt} is the dialogue so far without the final assistant label.
    assert prompts == ["\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Add 2 and 2.", "\n\nHuman: Sort 3 1."]
    assert (chosen, rejected, types) == (["4", "1 3"], ["five", "no"], None)
    assert rm_accuracy.load_triples(tmp_path / "hhh.json")[3] == ["honest", "helpful"]
    assert rm_accuracy.load_triples(tmp_path / "c.jsonl")[:3] == (["\n\nHuman: q0", "\n\nHuman: q1"],
                                                                   ["good", "yes"], ["bad", "no"])


def test_rm_accuracy_bad_files_name_the_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="empty.jsonl: no records"):
        rm_accuracy.detect_format(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('\n{"chosen": "a", "rej\n{"chosen": "x"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: malformed JSON"):
        rm_accuracy.detect_format(tmp_path / "bad.jsonl")
    (tmp_path / "other.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(InputError, match="cannot tell the format"):
        rm_accuracy.detect_format(tmp_path / "other.jsonl")
    write_jsonl_atomic(tmp_path / "noreply.jsonl", [{"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"}])
    with pytest.raises(InputError, match="noreply.jsonl: record 1: chosen transcript has no assistant turn"):
        rm_accuracy.load_triples(tmp_path / "noreply.jsonl")


def test_rm_accuracy_matches_the_scores_of_a_real_reward_model(tmp_path):
    from almost_jax.data.rm_data import RewardContract
    from almost_jax.learners.reward import RewardScorer
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import ScalarHeadModel, init_params
    cfg = get_config("tiny")
    scorer = RewardScorer(ScalarHeadModel(cfg), init_params(cfg, jax.random.key(3), "scalar"), Chars(),
                          RewardContract(max_len=64), batch_size=4)
    (tmp_path / "hhh.json").write_text(json.dumps([dict(p, type=t) for p, t in zip(HH * 3, "aabbcc")]))
    out = rm_accuracy.evaluate_file(scorer, tmp_path / "hhh.json")
    prompts, chosen, rejected, types = rm_accuracy.load_triples(tmp_path / "hhh.json")
    rc, rr = scorer.raw_scores(prompts, chosen), scorer.raw_scores(prompts, rejected)
    assert out["n"] == 6 and out["accuracy"] == pytest.approx(np.mean(rc > rr))
    assert out["mean_margin"] == pytest.approx(float(np.mean(rc - rr)), abs=1e-6)
    for t in "abc":
        sel = np.array(types) == t
        assert out["per_type"][t] == pytest.approx(np.mean((rc > rr)[sel]))
    table = rm_accuracy.format_table([out])
    assert "hhh.json" in table and f"{out['accuracy']:.3f}" in table and "  c" in table


# ---------------------------------------------------------------- oracle pairs

def test_oracle_agreement_counts_agreements_and_ties():
    pairs = [_comparison(0, "7", "9"), _comparison(1, "9", "7"), _comparison(2, "1 2 4 7", "1 2 4 7 ")]
    pairs[0].prompt = pairs[1].prompt = "\n\nHuman: What is 4 + 3?"
    pairs[2].prompt = "\n\nHuman: Sort 7 1 4 2."
    out = oracle_pairs.oracle_agreement(pairs)
    assert out == {"pairs": 3, "oracle_agrees": 1 / 3, "oracle_ties": 1 / 3, "oracle_agrees_decisive": 0.5}
    assert math.isnan(oracle_pairs.oracle_agreement([])["oracle_agrees"])


def test_gold_pairs_put_the_oracle_winner_first_and_skip_ties():
    tasks = [PromptRecord(id="a", prompt="What is 4 + 3?", meta={"family": "add"}),
             PromptRecord(id="s", prompt="Sort 7 1 4 2.", meta={"family": "sort"})]
    responses = {"A": {"a": "8", "s": "1 2 4 7"}, "B": {"a": "7", "s": "1 2 4 7"}, "C": {"a": "17"}}
    pairs = oracle_pairs.gold_pairs(tasks, responses)
    # task a: 7 (1.0) > 8 (0.5) > 17 (0.25): three decisive pairs; task s: A and B identical, C missing.
    assert [(p.chosen, p.rejected) for p in pairs] == [("7", "8"), ("8", "17"), ("7", "17")]
    assert [(p.provenance.chosen_setup, p.provenance.rejected_setup) for p in pairs] == [("B", "A"), ("A", "C"),
                                                                                          ("B", "C")]
    assert len({p.id for p in pairs}) == 3 and all(p.meta == {"family": "add", "query_id": "a"} for p in pairs)
    assert pairs[0].provenance.filters == {"label": "oracle", "gap": 0.5}
    assert oracle_pairs.mean_oracle_score(tasks, {"a": "7", "s": "7 1 4 2"}) == pytest.approx((1.0 + 0.25) / 2)


# ---------------------------------------------------------------- win-rates

def test_win_rate_mean_and_standard_error():
    judge = winrate.score_judge(lambda prompts, replies: np.array([len(r) for r in replies], float))
    rate, se = winrate.win_rate(judge, ["p"] * 4, ["aaa", "a", "aa", "aaaa"], ["a", "aaa", "aa", "a"])
    outcomes = np.array([1.0, 0.0, 0.5, 1.0])
    assert rate == pytest.approx(outcomes.mean()) and se == pytest.approx(outcomes.std(ddof=1) / 2)
    tie = winrate.score_judge(lambda p, r: np.array([len(x) for x in r], float), tie_margin=1.5)
    assert list(tie(["p"] * 2, ["aaa", "aaaa"], ["aa", "a"])) == [0.5, 1.0]
    assert all(math.isnan(x) for x in winrate.win_rate(judge, [], [], []))
    assert math.isnan(winrate.win_rate(judge, ["p"], ["a"], ["b"])[1])


# ---------------------------------------------------------------- report files

def test_write_report_tables_plots_and_summary(tmp_path):
    from almost_jax.evaluation.claims import claim
    rows = [{"key": "ppo", "name": "PPO", "seeds": 3, "oracle_score": 0.5, "oracle_score_ci": 0.02, "rm_score": 1.25,
             "winrate_oracle": 0.6, "winrate_oracle_ci": 0.05, "winrate_rm": 0.7, "winrate_rm_ci": 0.04,
             "score_add": 0.25, "score_add_ci": 0.1}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "rl/reward": 0.1 * s, "rl/kl": 0.01 * s}) + "\n"
                               for s in range(1, 4)) + '{"step": 4, "rl/rew')  # a killed writer's tail
    claims = [claim("PPO > SFT", 0.03, [0.01, 0.05], 0.0)]
    summary = report.write_report(tmp_path / "out", "the title", rows, ["add"], claims,
                                  {"comparisons": {"pairs": 12, "agree": 0.75}}, {"RM": 0.7}, metrics,
                                  [{"stage": "ppo", "seconds": 12.0, "finished_at": 0.0}], ["a note"])
    assert summary["policies"] == {"ppo": {k: v for k, v in rows[0].items() if k not in ("key", "name")}}
    assert summary["comparisons"] == {"pairs": 12, "agree": 0.75} and summary["claims"] == claims
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("# the title") and "| PPO | 3 | 0.500 ± 0.020 | 1.250 | 0.600 ± 0.050 | 0.700 ± 0.040 |" in md
    assert "| PPO | 0.250 ± 0.100 |" in md and "PPO > SFT" in md and "a note" in md
    assert "| pairs | 12 |" in md and "| agree | 0.75 |" in md and "ppo_curves.png" in md
    for png in ("rm_vs_oracle.png", "ppo_curves.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"