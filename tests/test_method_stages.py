"""Optional method stages: with cfg.methods empty every hash and run is the default pipeline's;
enabling, editing or dropping a method reruns that method and the report only; bad names are
refused; the report turns each method's "policies" into rows. Fake stages, no models."""
import json
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from almost_jax.config_lib import load_config_file
from almost_jax.pipeline import report, runner
from almost_jax.pipeline.stages import STAGES, Stage

REPO = Path(__file__).resolve().parents[1]


def fake_stages(calls):
    def stage(name, optional=False):
        return Stage(name, (f"{name}_block",), lambda cfg, out: (calls.append(name), {"ran": name})[1], optional)
    return [stage("a"), stage("b"), stage("m1", True), stage("m2", True), stage("report")]


def config(tmp_path, methods=(), **blocks):
    cfg = ConfigDict(dict(workdir=str(tmp_path), methods=methods, a_block=1, b_block=ConfigDict(dict(v=1)), m1_block=1,
                          m2_block=ConfigDict(dict(n=(1, 4))), report_block=0))
    cfg.update(blocks)
    return cfg


def hashes(cfg, stages):
    return runner.chain_hashes(cfg, runner.active_stages(cfg, stages))


def test_default_hashes_do_not_see_optional_stages(tmp_path):
    stages = fake_stages([])
    default = [s for s in stages if not s.optional]
    base = hashes(config(tmp_path), stages)
    assert base == runner.chain_hashes(config(tmp_path), default)  # as if the optional stages did not exist
    one = hashes(config(tmp_path, ("m1",)), stages)
    both = hashes(config(tmp_path, ("m1", "m2")), stages)
    assert one["a"] == base["a"] and one["b"] == base["b"] and one["report"] != base["report"]
    assert both["m1"] == one["m1"] and both["report"] not in (one["report"], base["report"])  # m2 leaves m1 alone
    edited = hashes(config(tmp_path, ("m1", "m2"), m2_block=ConfigDict(dict(n=(1, 16)))), stages)
    assert {k for k in both if both[k] != edited[k]} == {"m2", "report"}
    upstream = hashes(config(tmp_path, ("m1", "m2"), b_block=ConfigDict(dict(v=2))), stages)
    assert {k for k in both if both[k] != upstream[k]} == {"b", "m1", "m2", "report"}


def test_runs_rerun_only_the_changed_method_and_the_report(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "_stages", lambda: fake_stages(calls))
    runner.run_pipeline(config(tmp_path))
    assert calls == ["a", "b", "report"]
    for methods, expected in ((("m1",), ["m1", "report"]), (("m1", "m2"), ["m2", "report"]),
                              (("m2",), ["report"]), (("m1", "m2"), ["report"])):
        calls.clear()
        results = runner.run_pipeline(config(tmp_path, methods))
        assert calls == expected, (methods, calls)
        assert list(results) == ["a", "b", *methods, "report"]


def test_bad_method_names_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_stages", lambda: fake_stages([]))
    with pytest.raises(ValueError, match=r"names \['zzz'\], which are not optional stages; optional stages: \['m1', 'm2'\]"):
        runner.run_pipeline(config(tmp_path, ("m1", "zzz")))
    with pytest.raises(ValueError, match=r"\['m2'\] are optional: add them to --config.methods"):
        runner.run_pipeline(config(tmp_path, ("m1",)), only=("m2",))


def test_pipeline_configs_name_real_stages():
    optional = {s.name for s in STAGES if s.optional}
    assert load_config_file(REPO / "configs/mini.py").methods == ()
    methods = load_config_file(REPO / "configs/mini_methods.py").methods
    assert {"best_of_n", "expert_iteration", "rloo", "grpo"} <= set(methods) <= optional
    assert STAGES[-1].name == "report" and not STAGES[-1].optional


def test_report_rows_from_method_policies(tmp_path, monkeypatch):
    from almost_jax.data.schemas import PromptRecord
    from almost_jax.jobs.common import write_manifest
    cfg = load_config_file(REPO / "configs/mini.py", [f"workdir={tmp_path}"])
    cfg.methods = ("best_of_n", "expert_iteration", "rloo")
    tasks = [PromptRecord(id="t0", prompt="Compute 1 + 1."), PromptRecord(id="t1", prompt="Compute 2 + 2.")]
    (tmp_path / "best_of_n").mkdir()
    (tmp_path / "best_of_n" / "best_of_4.json").write_text(json.dumps({"t1": "4", "t0": "2"}))
    write_manifest(tmp_path / "best_of_n" / "manifest.json", cfg, summary={"rm_best_of_4": 0.5, "policies": {
        "best_of_4": {"label": "best-of-4", "replies": str(tmp_path / "best_of_n" / "best_of_4.json")}}})
    write_manifest(tmp_path / "expert_iteration" / "manifest.json", cfg, summary={"policies": {
        "expert_iteration": {"label": "EI", "params": "/ei/params"}}})
    decoded = []
    monkeypatch.setattr(report, "policy_replies", lambda c, path, preset: (decoded.append((str(path), preset)),
                                                                           ({}, ["a", "b"]))[1])
    rows, sections = report.method_policies(cfg, tasks)
    assert rows == [("best_of_4", "best-of-4", ["2", "4"]), ("expert_iteration", "EI", ["a", "b"])]  # rloo: not run
    assert decoded == [("/ei/params", cfg.family[cfg.sft_member].preset)]
    assert sections == {"best_of_n": {"rm_best_of_4": 0.5}, "expert_iteration": {}, "rloo": {}}
