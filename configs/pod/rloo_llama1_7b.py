"""RLOO at paper scale: the PPO pod job (LLaMA-1 7B SFT policy, 7B RM, rollout 512 / step 256, lr
1e-5) with RLOO's defaults: k = 4 replies per prompt (128 prompts per step), one pass per rollout,
kl 0.0067 on the k1 estimator summed over each reply, no value model.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.rl --config=configs/pod/rloo_llama1_7b.py
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.jobs.rl import use_algorithm


def get_config():
    cfg = use_algorithm(load_config_file(Path(__file__).with_name("ppo_llama1_7b.py")), "rloo")
    cfg.workdir = cfg.workdir.replace("/ppo_7b", "/rloo_7b")
    return cfg
