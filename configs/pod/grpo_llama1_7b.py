"""GRPO at paper scale: the PPO pod job (LLaMA-1 7B SFT policy, 7B RM, rollout 512 / step 256, lr
1e-5) with GRPO's defaults: G = 8 replies per prompt (64 prompts per step; the paper's G is 64),
one pass per rollout, k3 KL to the reference as a loss term with beta 0.04, no value model.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.rl --config=configs/pod/grpo_llama1_7b.py
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.jobs.rl import use_algorithm


def get_config():
    cfg = use_algorithm(load_config_file(Path(__file__).with_name("ppo_llama1_7b.py")), "grpo")
    cfg.workdir = cfg.workdir.replace("/ppo_7b", "/grpo_7b")
    return cfg
