"""ALMoST stage 3 at paper scale: PPO on the LLaMA-1 7B SFT policy against the 7B RM (AlpacaFarm's
recipe: rollout 512, step 256, 2 epochs, kl 0.0067 fixed, lr 1e-5), on a TPU pod or GPU host."""
from almost_jax.jobs.ppo import ppo_config


def get_config():
    cfg = ppo_config()
    cfg.workdir = "gs://YOUR_BUCKET/almost/ppo_7b"
    cfg.prompts = "gs://YOUR_BUCKET/almost/queries/rl.jsonl"
    cfg.policy_init = "gs://YOUR_BUCKET/almost/sft_7b/params"
    cfg.rm_params = "gs://YOUR_BUCKET/almost/reward_7b/params"
    cfg.rm_stats = "gs://YOUR_BUCKET/almost/reward_7b/reward_stats.json"
    for block in (cfg.policy_model, cfg.rm_model):
        block.preset, block.dtype, block.remat = "llama1-7b", "bfloat16", True
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1
    return cfg
