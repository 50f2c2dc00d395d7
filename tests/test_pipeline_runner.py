"""The pipeline runner: a stage whose manifest carries the current chain hash is skipped; editing a
stage's config block reruns it and every later stage and clears their stale outputs; an
interrupted stage keeps its partial outputs for its own resume."""
import json

import pytest
from ml_collections import ConfigDict

from almost_jax.pipeline import runner
from almost_jax.pipeline.stages import Stage


@pytest.fixture
def pipeline(monkeypatch, tmp_path):
    calls, fail = [], set()

    def make(name):
        def run(cfg, out):
            calls.append(name)
            (out / "partial.txt").open("a").write("x")  # what a resumable stage streams
            if name in fail:
                raise RuntimeError(f"{name} killed")
            (out / "done.txt").write_text(str(cfg[name].value))
            return {"value": cfg[name].value}
        return run

    stages = [Stage(n, (n,), make(n)) for n in ("a", "b", "c")]
    monkeypatch.setattr(runner, "_stages", lambda cfg: stages)
    cfg = ConfigDict(dict(workdir=str(tmp_path), a=ConfigDict(dict(value=1)), b=ConfigDict(dict(value=2)),
                          c=ConfigDict(dict(value=3))))
    return cfg, calls, fail, tmp_path


def test_done_stages_are_skipped_and_an_edit_reruns_from_that_stage(pipeline, capsys):
    cfg, calls, _, root = pipeline
    first = runner.run_pipeline(cfg)
    assert calls == ["a", "b", "c"] and first == {"a": {"value": 1}, "b": {"value": 2}, "c": {"value": 3}}
    calls.clear()
    assert runner.run_pipeline(cfg) == first and calls == []
    assert capsys.readouterr().out.count("skipped (done)") == 3
    cfg.b.value = 20  # stage b's block changed: b and c rerun, a does not
    assert runner.run_pipeline(cfg)["b"] == {"value": 20} and calls == ["b", "c"]
    assert (root / "b" / "partial.txt").read_text() == "x"  # b's stale outputs were cleared first
    assert (root / "a" / "partial.txt").read_text() == "x"
    assert (root / "c" / "done.txt").read_text() == "3"
    calls.clear()
    runner.run_pipeline(cfg, only=["c"])
    assert calls == []  # only c asked, and it is done
    with pytest.raises(ValueError, match="unknown stage"):
        runner.run_pipeline(cfg, only=["z"])


def test_an_interrupted_stage_keeps_its_partial_outputs(pipeline):
    cfg, calls, fail, root = pipeline
    fail.add("b")
    with pytest.raises(RuntimeError, match="b killed"):
        runner.run_pipeline(cfg)
    assert not (root / "b" / "manifest.json").exists()
    fail.clear()
    calls.clear()
    runner.run_pipeline(cfg)
    assert calls == ["b", "c"]
    assert (root / "b" / "partial.txt").read_text() == "xx"  # resumed next to what it had written
    cfg.a.value = 10
    calls.clear()
    runner.run_pipeline(cfg)
    assert calls == ["a", "b", "c"] and (root / "b" / "partial.txt").read_text() == "x"


def test_chain_hash_depends_on_earlier_stages_only():
    cfg = ConfigDict(dict(a=ConfigDict(dict(value=1)), b=ConfigDict(dict(value=2)), c=ConfigDict(dict(value=3))))
    stages = [Stage(n, (n,), None) for n in "abc"]
    before = runner.chain_hashes(cfg, stages)
    cfg.b.value = 5
    after = runner.chain_hashes(cfg, stages)
    assert before["a"] == after["a"] and before["b"] != after["b"] and before["c"] != after["c"]


def test_skipped_input_records_reach_the_stage_manifest_and_the_report(pipeline, tmp_path_factory):
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.jobs.common import read_manifest
    from almost_jax.pipeline.report import skipped_by_stage
    cfg, _, _, root = pipeline
    data = tmp_path_factory.mktemp("in") / "prompts.jsonl"
    data.write_text('{"id": "1", "prompt": "a"}\n{"id": 2}\n{"id": "3", "prompt": "c"}\n')
    stages = runner._stages(cfg)
    read = lambda cfg, out: {"n": len(load_jsonl(data, PromptRecord, on_error="skip"))}  # noqa: E731
    stages[1] = Stage("b", ("b",), read)
    runner.run_pipeline(cfg)
    assert read_manifest(root / "b" / "manifest.json")["skipped_records"] == {str(data): 1}
    assert read_manifest(root / "c" / "manifest.json")["skipped_records"] == {}  # counted per stage
    assert skipped_by_stage(root) == {f"b: {data}": 1}


# ---------------------------------------------------------------- linking a finished run

def _stages(calls):
    def make(name):
        def run(cfg, out):
            calls.append(name)
            (out / "out.txt").write_text(f"{name} {cfg[name].value}")
            return {"value": cfg[name].value}
        return Stage(name, (name,), run)
    return [make("a"), make("b"), make("c")]


def _cfg(workdir, a=1, b=2, c=3, reuse=""):
    return ConfigDict(dict(workdir=str(workdir), reuse_from=reuse, a=ConfigDict(dict(value=a)),
                           b=ConfigDict(dict(value=b)), c=ConfigDict(dict(value=c))))


def test_variant_run_links_the_stages_it_shares_and_runs_the_rest(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "_stages", lambda cfg: _stages(calls))
    runner.run_pipeline(_cfg(tmp_path / "base"))
    assert calls == ["a", "b", "c"]
    calls.clear()
    # the variant differs from stage b on: a is linked, b and c run in the variant's own directory
    runner.run_pipeline(_cfg(tmp_path / "variant", b=20, reuse=str(tmp_path / "base")))
    assert calls == ["b", "c"]
    variant = tmp_path / "variant"
    assert (variant / "a").is_symlink() and not (variant / "b").is_symlink()
    assert (variant / "b" / "out.txt").read_text() == "b 20"
    assert (tmp_path / "base" / "b" / "out.txt").read_text() == "b 2"  # the base run is untouched
    # changing a later unlinks a (never clearing the base run's directory) and reruns everything
    calls.clear()
    runner.run_pipeline(_cfg(variant, a=10, b=20, reuse=str(tmp_path / "base")))
    assert calls == ["a", "b", "c"]
    assert not (variant / "a").is_symlink()
    assert (tmp_path / "base" / "a" / "out.txt").read_text() == "a 1"
    assert json.loads((tmp_path / "base" / "a" / "manifest.json").read_text())["summary"] == {"value": 1}


def test_finished_stages_are_skipped_and_a_changed_block_reruns_from_there(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "_stages", lambda cfg: _stages(calls))
    runner.run_pipeline(_cfg(tmp_path))
    calls.clear()
    runner.run_pipeline(_cfg(tmp_path))
    assert calls == []
    runner.run_pipeline(_cfg(tmp_path, b=5))
    assert calls == ["b", "c"]
