"""RLOO on the mini world: the pipeline's PPO job (same prompts, SFT start, RM, batch sizes and
lengths) with RLOO's estimator and loss: 4 replies per prompt (16 prompts x 4 = 64 per step),
leave-one-out baseline, REINFORCE on whole replies, no value model. The KL coefficient is the mini
PPO's (0.05, tuned for 16-token replies; `rloo` block of configs/mini.py), on the k1 estimator
summed over the reply. The same job as the pipeline's optional `rloo` stage.

    python -m almost_jax.jobs.rl --config=configs/mini/rloo.py [--config.rl.samples_per_prompt=2]
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.pipeline import job_configs


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    return job_configs.rl_method_job(mini, Path(mini.workdir) / "rloo", "rloo")
