"""The mini pipeline with every method stage enabled: the table of issue 18 (gold-oracle score, RM
score, win-rates vs the prompted baseline, paired difference vs the SFT start, all from the same SFT
start and the same held-out tasks) for SFT, best-of-1/4/16, expert iteration, PPO, RLOO, GRPO, DPO
on synthetic pairs, DPO on oracle-labelled pairs (a control), Selfie/SPA and CUT.

    python -m almost_jax.pipeline --config=configs/mini_methods.py

Same workdir as configs/mini.py: the default stages already finished there are reused (their
hashes do not change when methods are enabled) and only the method stages and the report run.
Run time of the method stages and the report on 2 quiet CPU cores: 6.3 min (2026-11-27; each
stage's own time is in its manifest, `seconds`, and in the README).
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file

METHODS = ("best_of_n", "expert_iteration", "rloo", "grpo", "dpo", "dpo_oracle", "spa", "cut")


def get_config():
    cfg = load_config_file(Path(__file__).resolve().parent / "mini.py")
    cfg.methods = METHODS
    return cfg
