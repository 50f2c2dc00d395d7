"""Slow end-to-end checks of the mini world (minutes on 2 cores; excluded by default):

    .venv/bin/python -m pytest -q -m slow
    ALMOST_JAX_MINI_WORKDIR=work_dir/mini .venv/bin/python -m pytest -q -m slow   # reuse a finished run

The pipeline runs on configs/mini.py (stages already finished in the work dir are skipped).
"""
import json
import os
from pathlib import Path

import pytest

from almost_jax.config_lib import load_config_file
from almost_jax.pipeline import run_pipeline
from almost_jax.pipeline.stages import LENGTH_FILTER_VARIANTS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return Path(os.environ.get("ALMOST_JAX_MINI_WORKDIR") or tmp_path_factory.mktemp("mini"))


def _pipeline(workdir: Path, stages=()):
    cfg = load_config_file(REPO / "configs" / "mini.py", [f"workdir={workdir}"])
    return run_pipeline(cfg, stages)


def test_larger_family_members_score_higher_under_the_oracle(workdir):
    """The ALMoST prior's premise in the mini world: with the demonstrations the comparison setups
    use (3-shot), L > M > S under the oracle, greedy and sampled."""
    family = _pipeline(workdir, ("world", "pretrain", "family_eval"))["family_eval"]
    for mode in ("greedy", "sampled"):
        s, m, l = (family[f"{k}_{mode}_3shot"] for k in "SML")
        assert l > m > s, (mode, s, m, l)
    assert family["L_sampled_3shot"] - family["S_sampled_3shot"] > 0.1  # measurably, not by noise


def test_whole_pipeline_report(workdir):
    """Every stage runs; the report holds every policy, every claim with a CI and a verdict, and the
    ALMoST prior orders the setups; the RM was chosen without the oracle; PPO stayed near its budget."""
    cfg = load_config_file(REPO / "configs" / "mini.py", [f"workdir={workdir}"])
    _pipeline(workdir)
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    policies = summary["policies"]
    assert set(policies) == {"setup_A", "setup_B", "setup_C", "setup_D", "prompted_baseline", "sft_random",
                             "sft_rm", "ppo", "ppo_final"}
    assert policies["sft_rm"]["seeds"] == len(cfg.seeds) >= 3
    scores = [policies[f"setup_{k}"]["oracle_score"] for k in "ABCD"]
    assert scores == sorted(scores, reverse=True), scores
    rm = summary["reward_model"]
    variants = LENGTH_FILTER_VARIANTS[cfg.reward_length_filter]
    assert all(rm[f"{v}_oracle_agreement"] > 0.6 for v in variants), rm
    accuracy = {v: rm[f"{v}_synthetic_heldout_accuracy"] for v in variants}
    assert rm["chosen"] == max(accuracy, key=accuracy.get), rm  # by synthetic accuracy, not the oracle
    for c in summary["claims"]:
        assert c["ci"][0] <= c["estimate"] <= c["ci"][1] and c["verdict"], c
    ppo = summary["ppo"]
    for seed in cfg.seeds:  # the adaptive controller kept the KL near its target
        assert ppo[f"seed_{seed}_final_kl"] < 5 * cfg.ppo.kl_target_per_reply, ppo
