"""ALMoST stage 3 at paper scale: PPO on the LLaMA-1 7B SFT policy against the 7B RM (AlpacaFarm's
recipe: rollout 512, step 256, 2 epochs, kl 0.0067 fixed, lr 1e-5), on a TPU pod or GPU host.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.ppo --config=configs/pod/ppo_llama1_7b.py

The value model takes the RM's architecture from the RM's contract (reward_7b/rm_contract.json).
"""
from almost_jax.jobs.rl import rl_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = rl_config("ppo")
    cfg.workdir = f"{BUCKET}/almost/ppo_7b"
    cfg.prompts = f"{BUCKET}/almost/queries/rl.jsonl"
    cfg.tokenizer = f"{BUCKET}/models/llama1-7b-hf/tokenizer.model"
    cfg.policy_init = f"{BUCKET}/almost/sft_7b/params"
    cfg.rm_path = f"{BUCKET}/almost/reward_7b"
    cfg.policy_model.preset, cfg.policy_model.dtype, cfg.policy_model.remat = "llama1-7b", "bfloat16", True
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1
    return cfg
