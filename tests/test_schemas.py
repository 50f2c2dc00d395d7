"""JSONL schemas: validation with line numbers, atomic and appending writers, public formats."""

import gzip
import json
import logging
import os

import pytest

from almost_jax.data import schemas as S
from almost_jax.data.errors import InputError, reset_skipped, skipped_records

GOOD = {
    S.PromptRecord: {"id": "p1", "prompt": "What is 4 + 3?", "meta": {"family": "add"}},
    S.ComparisonRecord: {
        "prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "Hello!", "rejected": "hm",
        "provenance": {"chosen_setup": "L-faithful-3shot", "rejected_setup": "S-plain-1shot",
                       "filters": {"long_enough": True, "mean_len": 4.5}}},
    S.DialogueRecord: {"id": "d1", "turns": [
        {"speaker": "human", "text": "Sort 4 1 3."},
        {"speaker": "assistant", "text": "1 3 4",
         "candidates": [{"text": "1 3 4", "score": 1.5}, {"text": "4 1 3", "score": -2}]}]},
    S.DemonstrationRecord: {"input": "\n\nHuman: hi\n\nAssistant:", "output": "Hello!"},
    S.JudgmentRecord: {"instruction": "Add 2 and 2.", "response": "5", "judgment": "Wrong: 2 + 2 is 4."},
}

# (schema, bad object, words the error message must contain)
BAD = [
    (S.PromptRecord, {"prompt": "x"}, "id: missing required field"),
    (S.PromptRecord, {"id": 3, "prompt": "x"}, "id: expected str, got int"),
    (S.PromptRecord, {"id": "a", "prompt": "x", "extra": 1}, "extra: unknown field"),
    (S.ComparisonRecord, {"prompt": "p", "chosen": "a", "rejected": "b"}, "provenance: missing"),
    (S.ComparisonRecord, {"prompt": "p", "chosen": "a", "rejected": "b",
                          "provenance": {"chosen_setup": "x"}}, "provenance.rejected_setup: missing"),
    (S.ComparisonRecord, {"prompt": "p", "chosen": "a", "rejected": "a",
                          "provenance": {"chosen_setup": "x", "rejected_setup": "y"}}, "identical"),
    (S.DialogueRecord, {"turns": []}, "turns is empty"),
    (S.DialogueRecord, {"turns": "hi"}, "turns: expected a list"),
    (S.DialogueRecord, {"turns": [{"speaker": "bot", "text": "x"}]}, "turns[0].speaker: expected one of"),
    (S.DialogueRecord, {"turns": [{"speaker": "assistant", "text": "x",
                                   "candidates": [{"text": "x", "score": "high"}]}]},
     "turns[0].candidates[0].score: expected a number"),
    (S.DialogueRecord, {"turns": [{"speaker": "human", "text": "x",
                                   "candidates": [{"text": "x", "score": 1}]}]}, "only assistant turns"),
    (S.DemonstrationRecord, {"input": "x", "output": None}, "output: expected str, got NoneType"),
    (S.JudgmentRecord, {"instruction": "x", "response": "y"}, "judgment: missing required field"),
]


def _write_lines(path, lines, final_newline=True):
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")


@pytest.mark.parametrize("schema", list(GOOD))
def test_good_records_round_trip(tmp_path, schema):
    path = tmp_path / "r.jsonl"
    records = [S.from_dict(schema, GOOD[schema])] * 3
    assert S.write_jsonl_atomic(path, records) == 3
    reader = S.read_jsonl(path, schema)
    assert list(reader) == records
    assert (reader.n_records, reader.n_skipped, reader.truncated_tail) == (3, 0, False)
    assert json.loads(path.read_text().splitlines()[0]) == GOOD[schema]  # defaults omitted
    assert os.listdir(tmp_path) == ["r.jsonl"]  # no temp file left behind


@pytest.mark.parametrize("schema,bad,message", BAD)
def test_bad_record_names_line_and_problem(tmp_path, schema, bad, message):
    path = tmp_path / "r.jsonl"
    good = json.dumps(GOOD[schema])
    _write_lines(path, [good, "", good, json.dumps(bad), good])
    with pytest.raises(S.RecordError) as err:
        list(S.read_jsonl(path, schema))
    assert err.value.lineno == 4 and "r.jsonl:4: " in str(err.value)
    assert message in str(err.value)
    reader = S.read_jsonl(path, schema, on_error="skip")
    assert len(list(reader)) == 3 and reader.n_skipped == 1 and reader.problems[0][0] == 4


@pytest.mark.parametrize("schema", list(GOOD))
@pytest.mark.parametrize("line,message", [
    ('{"id": "a", "prompt": ', "malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
    ("not json at all", "malformed JSON"),
])
def test_malformed_lines(tmp_path, schema, line, message):
    path = tmp_path / "r.jsonl"
    _write_lines(path, [json.dumps(GOOD[schema]), line, json.dumps(GOOD[schema])])
    with pytest.raises(S.RecordError, match=rf"r.jsonl:2: {message}"):
        list(S.read_jsonl(path, schema))


def test_skip_logs_warning_with_line_number(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    _write_lines(path, [json.dumps(GOOD[S.PromptRecord]), "{oops", json.dumps({"id": "x"})])
    with caplog.at_level(logging.WARNING):
        reader = S.read_jsonl(path, S.PromptRecord, on_error="skip")
        assert len(list(reader)) == 1
    assert reader.n_skipped == 2 and [p[0] for p in reader.problems] == [2, 3]
    assert "r.jsonl:2" in caplog.text and "r.jsonl:3" in caplog.text


@pytest.mark.parametrize("schema", list(GOOD))
def test_truncated_last_line_of_an_input_is_an_error(tmp_path, schema, caplog):
    """A cut-off input file must not lose its last record silently; skipping it is counted for the
    manifest; only a job's own stream read back on resume ignores its partial last line."""
    path = tmp_path / "r.jsonl"
    good = json.dumps(GOOD[schema])
    _write_lines(path, [good, good, good[: len(good) // 2]], final_newline=False)
    with pytest.raises(InputError, match=r"r\.jsonl:3: the last line is cut off") as e:
        S.load_jsonl(path, schema)
    assert e.value.line == 3 and e.value.path == str(path)
    reset_skipped()
    with caplog.at_level(logging.WARNING):
        reader = S.read_jsonl(path, schema, on_error="skip")
        assert len(list(reader)) == 2
    assert reader.truncated_tail and reader.problems[0][0] == 3 and "r.jsonl:3" in caplog.text
    assert skipped_records() == {str(path): 1}
    reset_skipped()
    own = S.read_jsonl(path, schema, partial_tail_ok=True)  # raise mode: only the tail is tolerated
    assert len(list(own)) == 2 and own.truncated_tail and own.n_skipped == 0 and skipped_records() == {}
    _write_lines(path, [good, good[: len(good) // 2], good])
    with pytest.raises(InputError, match="r.jsonl:2: malformed JSON"):  # a bad middle line is never "partial"
        S.load_jsonl(path, schema, partial_tail_ok=True)


def test_complete_last_line_without_newline_is_accepted(tmp_path):
    path = tmp_path / "r.jsonl"
    _write_lines(path, [json.dumps(GOOD[S.PromptRecord])] * 2, final_newline=False)
    reader = S.read_jsonl(path, S.PromptRecord)
    assert len(list(reader)) == 2 and not reader.truncated_tail


def test_append_resumes_after_a_killed_writer(tmp_path):
    path = tmp_path / "out" / "stream.jsonl"
    recs = [S.PromptRecord(id=str(i), prompt=f"q{i}") for i in range(3)]
    S.append_jsonl(path, recs[0])
    S.append_jsonl(path, recs[1])
    with open(path, "a") as f:  # a job killed mid-write
        f.write('{"id": "2", "pro')
    assert list(S.read_jsonl(path, S.PromptRecord, partial_tail_ok=True)) == recs[:2]
    with S.JsonlAppender(path) as w:  # resuming drops the half line, then appends
        w.write(recs[2])
    reader = S.read_jsonl(path, S.PromptRecord)
    assert list(reader) == recs and not reader.truncated_tail


def test_append_completes_a_valid_line_missing_its_newline(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"id": "0", "prompt": "a"}))
    S.append_jsonl(path, {"id": "1", "prompt": "b"})
    assert [r.id for r in S.read_jsonl(path, S.PromptRecord)] == ["0", "1"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "r.jsonl"
    S.write_jsonl_atomic(path, [GOOD[S.PromptRecord]])

    def boom():
        yield GOOD[S.PromptRecord]
        raise RuntimeError("job died")

    with pytest.raises(RuntimeError):
        S.write_jsonl_atomic(path, boom())
    assert len(S.load_jsonl(path, S.PromptRecord)) == 1
    assert os.listdir(tmp_path) == ["r.jsonl"]


def test_atomic_write_has_the_umask_mode_and_clears_a_killed_writers_temp(tmp_path):
    old = os.umask(0o022)
    try:
        S.write_json_atomic(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    dead = tmp_path / ".a.json.999999999.ab12.tmp"  # a killed writer's (no such pid)
    dead.write_text("{")
    live = tmp_path / f".a.json.{os.getppid()}.cd34.tmp"  # a running writer's: left alone
    live.write_text("{")
    other = tmp_path / ".b.json.999999999.ef56.tmp"  # another target's
    other.write_text("{")
    S.write_json_atomic(tmp_path / "a.json", {"x": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.json", live.name, other.name])
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}


def test_read_without_schema_and_gzip(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"anything": 1}) + "\n")
    assert S.load_jsonl(path, None) == [{"anything": 1}]


def test_on_error_is_checked():
    with pytest.raises(ValueError):
        S.read_jsonl("x.jsonl", S.PromptRecord, on_error="ignore")


# ---------------------------------------------------------------- public evaluation formats

HH = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: Why did the "
                "chicken cross the road?",
      "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: No."}


def test_hh_pairs(tmp_path):
    path = tmp_path / "test.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(HH) + "\n" + json.dumps({"chosen": "x"}) + "\n")
    with pytest.raises(S.RecordError, match="test.jsonl.gz:2: rejected: missing"):
        list(S.read_hh_pairs(path))
    pair = next(iter(S.read_hh_pairs(path)))
    prompt, chosen, rejected = S.split_hh_pair(pair)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant:"
    assert (chosen, rejected) == ("Why did the chicken cross the road?", "No.")
    with pytest.raises(ValueError, match="share"):
        S.split_hh_pair(S.HHPair(chosen=HH["chosen"], rejected="\n\nHuman: other\n\nAssistant: x"))


def test_static_hhh(tmp_path):
    path = tmp_path / "hhh_eval.json"
    path.write_text(json.dumps([dict(HH, type="helpful"), dict(HH, type="harmless")]))
    items = S.read_static_hhh(path)
    assert [i.type for i in items] == ["helpful", "harmless"]
    assert S.split_hh_pair(items[0])[2] == "No."
    path.write_text(json.dumps([dict(HH, type="helpful"), {"chosen": "a", "rejected": "b"}]))
    with pytest.raises(S.RecordError, match="item 1: type: missing"):
        S.read_static_hhh(path)
    path.write_text(json.dumps({"chosen": "a"}))
    with pytest.raises(S.RecordError, match="expected a JSON list"):
        S.read_static_hhh(path)
    path.write_text("[{")
    with pytest.raises(S.RecordError, match="malformed JSON"):
        S.read_static_hhh(path)
