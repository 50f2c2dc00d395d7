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
    monkeypatch.setattr(runner, "_stages", lambda *a: fake_stages(calls))
    runner.run_pipeline(config(tmp_path))
    assert calls == ["a", "b", "report"]
    for methods, expected in ((("m1",), ["m1", "report"]), (("m1", "m2"), ["m2", "report"]),
                              (("m2",), ["report"]), (("m1", "m2"), ["report"])):
        calls.clear()
        results = runner.run_pipeline(config(tmp_path, methods))
        assert calls == expected, (methods, calls)
        assert list(results) == ["a", "b", *methods, "report"]


def test_bad_method_names_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_stages", lambda *a: fake_stages([]))
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


# ---------------------------------------------------------------- the stage runners on a tiny world

@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A pipeline workdir with what the method stages read: world (tokenizer, held-out tasks), the
    SFT (RM) policy, the reward model and the RL prompts; every model 'tiny'."""
    import shutil

    from tests.test_best_of_n import tiny_reward_model
    from tests.test_policy_eval import build_tiny_world
    root = tmp_path_factory.mktemp("mini_root")
    (root / "build").mkdir()
    w = build_tiny_world(root / "build")
    (root / "world").mkdir()
    shutil.copy(w["tokenizer"], root / "world" / "tokenizer.model")
    w["tokenizer"] = root / "world" / "tokenizer.model"
    shutil.copytree(w["params"], root / "sft" / "seed_0" / "rm" / "params")
    tiny_reward_model(w, root / "reward" / "rm")
    from almost_jax.miniworld.tasks import generate_tasks
    lines = lambda k, seed: "".join(json.dumps({"id": f"t{i}", "prompt": t.instruction, "meta": {"family": "add"}}) + "\n"  # noqa: E731
                                    for i, t in enumerate(generate_tasks("add", k, seed)))
    (root / "world" / "eval_tasks.jsonl").write_text(lines(6, 0))
    (root / "queries").mkdir()
    (root / "queries" / "rl.jsonl").write_text(lines(8, 1))
    return root


def tiny_config(root):
    from tests.test_policy_eval import TOKENIZER_VOCAB
    cfg = load_config_file(REPO / "configs/mini.py", [f"workdir={root}", "family.S.preset=tiny", "sampling_batch_size=32"])
    cfg.best_of_n.sampling.max_new_tokens = 6
    cfg.sft.train.update(dict(steps=2, batch_size=4, seq_len=64))
    cfg.sft.data.update(dict(eval_fraction=0.0, pack=False, allow_vocab_padding=256 - TOKENIZER_VOCAB))
    cfg.expert_iteration.update(dict(iterations=1, n=4))
    cfg.expert_iteration.sampling.max_new_tokens = 6
    return cfg


@pytest.fixture
def padded_setups(monkeypatch):
    """The tiny model has 256 embedding rows for the tiny tokenizer's 200 ids (the mini world's
    models match their tokenizer): its sampler setups allow the padding."""
    from almost_jax.pipeline import job_configs, method_stages
    from tests.test_policy_eval import TOKENIZER_VOCAB
    setup = job_configs.sampler_setup

    def padded(*a, **k):
        s = setup(*a, **k)
        s.allow_vocab_padding = 256 - TOKENIZER_VOCAB
        return s

    monkeypatch.setattr(job_configs, "sampler_setup", padded)
    monkeypatch.setattr(method_stages, "sampler_setup", padded)


def test_best_of_n_stage_rows_are_the_rms_picks_among_the_first_n(tiny_root, tmp_path, padded_setups):
    import numpy as np
    from almost_jax.pipeline.method_stages import run_best_of_n
    summary = run_best_of_n(tiny_config(tiny_root), tmp_path)
    cands = json.loads((tmp_path / "candidates.json").read_text())
    assert sorted(summary["policies"]) == ["best_of_1", "best_of_16", "best_of_4"]
    for n in (1, 4, 16):
        picks = json.loads(Path(summary["policies"][f"best_of_{n}"]["replies"]).read_text())
        assert list(picks) == [f"t{i}" for i in range(6)]
        for tid, c in cands.items():
            assert len(c["replies"]) == 16
            assert picks[tid] == c["replies"][int(np.argmax(c["rm_scores"][:n]))]
        best = np.mean([max(c["rm_scores"][:n]) for c in cands.values()])
        assert summary[f"rm_best_of_{n}"] == pytest.approx(best, rel=1e-6)
    assert summary["rm_best_of_1"] <= summary["rm_best_of_4"] <= summary["rm_best_of_16"]


@pytest.mark.slow  # one SFT round of a tiny model after 8 x 4 samples: ~1 min on 2 busy cores
def test_expert_iteration_stage_lists_its_final_policy(tiny_root, tmp_path, padded_setups):
    from almost_jax.pipeline.method_stages import run_expert_iteration
    summary = run_expert_iteration(tiny_config(tiny_root), tmp_path)
    entry = summary["policies"]["expert_iteration"]
    assert entry["params"] == str(tmp_path / "iter_0" / "sft" / "params") and Path(entry["params"]).is_dir()
    manifest = json.loads((tmp_path / "iter_0" / "sft" / "manifest.json").read_text())["config"]
    assert manifest["init_from"] == str(tiny_root / "sft" / "seed_0" / "rm" / "params")  # the PPO start
    assert manifest["data"]["train"] == str(tmp_path / "iter_0" / "dialogues.jsonl")
    assert summary["iter0_rm_best"] >= summary["iter0_rm_sample"] and 0 <= summary["iter0_gold_best"] <= 1
