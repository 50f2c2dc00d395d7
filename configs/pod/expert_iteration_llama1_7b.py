"""Expert iteration at paper scale (AlpacaFarm's recipe): best-of-16 of the LLaMA-1 7B SFT policy
on the RL prompts at temperature 1.0 (300 new tokens), picked by the 7B RM, then SFT from that
same start with the SFT recipe (3 epochs, lr 2e-5, 64 sequences per step, 512 tokens); one round.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.expert_iteration --config=configs/pod/expert_iteration_llama1_7b.py
"""
from almost_jax.config_lib import mesh_block
from almost_jax.jobs.expert_iteration import expert_iteration_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = expert_iteration_config("llama1-7b")
    cfg.workdir = f"{BUCKET}/almost/expert_iteration_7b"
    cfg.prompts = f"{BUCKET}/almost/queries/rl.jsonl"
    cfg.policy_init = f"{BUCKET}/almost/sft_7b/params"
    cfg.policy.tokenizer = f"{BUCKET}/models/llama1-7b-hf/tokenizer.model"
    # the policy's model block serves the sampler and each round's SFT (fp32 master weights, as sft_llama1_7b)
    cfg.policy.model.dtype, cfg.policy.model.remat = "bfloat16", True
    cfg.policy.batch_size = 16  # prompts per batch: 16 x 16 samples = 256 rows
    with cfg.policy.unlocked():
        cfg.policy.mesh = mesh_block(data=-1, fsdp=1, tensor=4)
    cfg.rm.path = f"{BUCKET}/almost/reward_7b"  # params/ + rm_contract.json
    cfg.rm.batch_size = 64
    with cfg.rm.unlocked():
        cfg.rm.mesh = mesh_block(data=-1, fsdp=1, tensor=4)
    cfg.sft.train.batch_size, cfg.sft.train.seq_len = 64, 512
    return cfg
