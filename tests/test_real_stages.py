"""The real-text stage list (pipeline/real_stages.py) as configs: chosen by `stage_list`, and each
job's config takes architecture, weights and tokenizer from the converted HF dir (no model needed)."""
from pathlib import Path

import pytest

from almost_jax.config_lib import load_config_file
from almost_jax.pipeline import real_stages as R
from almost_jax.pipeline import runner

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, *overrides):
    return load_config_file(REPO / "configs" / "smollm2_cpu.py", [f"workdir={tmp_path}", *overrides])


def test_stage_list_is_chosen_by_the_config(tmp_path):
    cfg = _cfg(tmp_path)
    assert [s.name for s in runner._stages(cfg)] == ["convert", "queries", "comparisons", "reward", "rmsp", "sft",
                                                     "ppo", "report"]
    mini = load_config_file(REPO / "configs" / "mini.py")
    assert runner._stages(mini)[0].name == "world"
    cfg.stage_list = "nope"
    with pytest.raises(ValueError, match="stage_list must be one of"):
        runner._stages(cfg)


def test_every_job_reads_the_converted_dir(tmp_path):
    cfg = _cfg(tmp_path)
    hf = str(tmp_path / "convert" / "hf")
    q = R.queries_job(cfg, tmp_path / "queries")
    assert q.generator.params == hf and q.generator.tokenizer == "" and q.num_queries == 40
    c = R.comparisons_job(cfg, tmp_path / "comparisons")
    assert {n: (s.template, s.n_shots, s.params) for n, s in c.setups.items()} == {
        "A": ("assistant_detailed.txt", 1, hf), "B": ("assistant_brief.txt", 3, hf),
        "C": ("assistant_brief.txt", 1, hf), "D": ("assistant_plain.txt", 1, hf)}
    assert R.reward_job(cfg, tmp_path / "reward").init_from == hf
    assert Path(R.eval_files(cfg)[0]).is_file()  # shipped with the package
    rm = R.rmsp_job(cfg, tmp_path / "rmsp")
    assert rm.assistant.params == rm.user.params == hf and rm.rm.path == str(tmp_path / "reward" / "rm")
    assert R.sft_job(cfg, tmp_path / "sft").init_from == hf
    ppo = R.ppo_job(cfg, tmp_path / "ppo")
    assert (ppo.policy_model.hf_path, ppo.tokenizer, ppo.gold) == (hf, hf, "")
    assert ppo.policy_init == str(tmp_path / "sft" / "params") and ppo.rl.steps == 3


def test_unknown_ppo_keys_are_errors(tmp_path):
    cfg = _cfg(tmp_path)
    with cfg.unlocked():
        cfg.ppo.stepz = 3
    with pytest.raises(KeyError, match="ppo.stepz is not a key"):
        R.ppo_job(cfg, tmp_path / "ppo")
    cfg = _cfg(tmp_path)
    with cfg.unlocked():
        cfg.ppo_optimizer.learning_rate = 1.0
    with pytest.raises(KeyError, match="ppo_optimizer.learning_rate is not a key"):
        R.ppo_job(cfg, tmp_path / "ppo")
