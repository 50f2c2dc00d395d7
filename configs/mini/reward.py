"""Reward model on the mini world (initialised from the largest mini model), trained on the
pipeline's synthetic comparisons in work_dir/mini; CPU, minutes.

    python -m almost_jax.jobs.train_rm --config=configs/mini/reward.py [--config.data.train=other.jsonl]
"""
from pathlib import Path

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    root = Path(mini.workdir)
    return job_configs.reward_job(mini, root / "reward" / "rm", root / "comparisons" / "comparisons.jsonl")
