"""GRPO on the mini world: the pipeline's PPO job (same prompts, SFT start, RM, batch sizes and
lengths) with GRPO's estimator and loss: 4 replies per prompt (16 prompts x 4 = 64 per step;
`grpo` block of configs/mini.py), group-normalised advantages, clipped surrogate per token, KL to
the reference as a loss term (k3, beta 0.04), no value model. The same job as the pipeline's
optional `grpo` stage. Dr. GRPO: --config.rl.grpo_std_normalize=False
--config.rl.grpo_length_normalize=False.

    python -m almost_jax.jobs.rl --config=configs/mini/grpo.py
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.pipeline import job_configs


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    return job_configs.rl_method_job(mini, Path(mini.workdir) / "grpo", "grpo")
