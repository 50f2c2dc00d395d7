"""CONTROL, not ALMoST: the mini pipeline with its RM trained on the same synthetic pairs relabelled
by the oracle (swapped where the oracle prefers the rejected reply, ties dropped), then the same
self-play, SFT and PPO from that RM. An upper bound on what the machinery does with a perfect
labeller; its report is marked as a control. Everything up to `comparisons` is linked from the
default run in work_dir/mini (same chain hash), so run that first.

    python -m almost_jax.pipeline --config=configs/mini_control.py

The pairs are the ones without the length filter (one RM, no choice between variants: the oracle's
labels make the filter's length heuristic moot). One seed: the control is a bound to read the
default run against, not a claim tested at 95% across seeds.
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file


def get_config():
    cfg = load_config_file(Path(__file__).resolve().parent / "mini.py")
    cfg.workdir = "work_dir/mini_control"
    cfg.reuse_from = "work_dir/mini"
    cfg.reward_labels = "oracle"
    cfg.reward_length_filter = "off"
    cfg.seeds = (0,)
    return cfg
