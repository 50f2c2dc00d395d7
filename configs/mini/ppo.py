"""PPO on the mini world: the pipeline's `ppo` stage job (AlpacaFarm's recipe scaled down), from
the RM-guided SFT policy against the RM in work_dir/mini, with the oracle's score of each rollout
batch logged beside the reward (evaluation only).

    python -m almost_jax.jobs.ppo --config=configs/mini/ppo.py [--config.rl.kl_coef=0.02]
"""
from pathlib import Path

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    seed = int(mini.seeds[0])  # the pipeline runs every seed of `seeds`; this job, the first
    return job_configs.ppo_job(mini, job_configs.seed_dir(Path(mini.workdir), "ppo", seed), seed)
