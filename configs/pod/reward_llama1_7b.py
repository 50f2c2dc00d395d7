"""ALMoST's reward model at paper scale: LLaMA-1 7B trunk, on a TPU pod (e.g. v4-32) or GPU host,
with the official recipe (lr 2e-5, wd 0.1, 1 epoch, cosine, 3% warmup, 128 pairs/step, 1024 tokens).

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.train_rm --config=configs/pod/reward_llama1_7b.py

Paths are on a filesystem every host shares (a gcsfuse mount of the bucket at /gcs/<bucket>).
"""
from almost_jax.jobs.reward_config import reward_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = reward_config("llama1-7b", batch_size=128, seq_len=1024, eval_every=100, checkpoint_every=200)
    cfg.workdir = f"{BUCKET}/almost/reward_7b"
    cfg.init_from = f"{BUCKET}/models/llama1-7b-hf"
    cfg.data.train = f"{BUCKET}/almost/comparisons/comparisons.jsonl"
    cfg.data.tokenizer = f"{BUCKET}/models/llama1-7b-hf/tokenizer.model"
    cfg.model.dtype = "bfloat16"
    cfg.model.remat_policy = "full"
    cfg.model.scan_layers = True  # compile time flat in depth
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1  # FSDP over all chips
    return cfg
