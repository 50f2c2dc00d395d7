"""ALMoST's reward model at paper scale: LLaMA-1 7B trunk, on a TPU pod (e.g. v4-32) or GPU host.

    launch/tpu_run.sh --name=almost --zone=... --accelerator=v4-32 -- \
      python -m almost_jax.jobs.train_rm --config=configs/pod/reward_llama1_7b.py \
        --config.init_from=gs://bucket/llama-7b-hf --config.data.train=gs://bucket/comparisons.jsonl
"""
from almost_jax.jobs.reward_config import reward_config


def get_config():
    cfg = reward_config("llama1-7b", batch_size=128, seq_len=1024, eval_every=100, checkpoint_every=200)
    cfg.workdir = "gs://YOUR_BUCKET/almost/reward_7b"
    cfg.model.dtype = "bfloat16"
    cfg.model.remat = True
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1  # FSDP over all chips
    return cfg
