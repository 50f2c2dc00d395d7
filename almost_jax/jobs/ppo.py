"""ALMoST stage 3: PPO from synthetic feedback (RLSF), AlpacaFarm's recipe as the default.

    python -m almost_jax.jobs.ppo --config=configs/mini/ppo.py

The RL job (jobs/rl.py) with `rl.algorithm=ppo`: the same `run`, under the name README and the
pipeline use. RLOO and GRPO: `python -m almost_jax.jobs.rl --config=configs/mini/rloo.py` (or grpo.py).
"""
from ml_collections import ConfigDict

from almost_jax.jobs.common import run_job
from almost_jax.jobs.rl import rl_config, run

__all__ = ["ppo_config", "run"]


def ppo_config() -> ConfigDict:
    return rl_config("ppo")


if __name__ == "__main__":
    run_job(run)
