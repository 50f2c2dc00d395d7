"""DPO at paper scale: LLaMA-1 7B from the ALMoST SFT policy (also the reference) on the synthetic
comparisons; AlpacaFarm's DPO recipe (beta 0.1, lr 1e-6, 2 epochs, 64 pairs per step, cosine, 3%
warmup; peers.md 1.6), prompts up to 256 tokens and replies up to 256; TPU pod / GPU host.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \\
      python -m almost_jax.jobs.dpo --config=configs/pod/dpo_llama1_7b.py
"""
from almost_jax.jobs.preference_config import dpo_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = dpo_config("llama1-7b", batch_size=64)
    cfg.workdir = f"{BUCKET}/almost/dpo_7b"
    cfg.init_from = f"{BUCKET}/almost/sft_7b/hf"
    cfg.data.train = f"{BUCKET}/almost/comparisons/comparisons.jsonl"
    cfg.data.tokenizer = f"{BUCKET}/models/llama1-7b-hf/tokenizer.model"
    cfg.optimizer.warmup_ratio = 0.03
    cfg.train.epochs = 2.0
    cfg.model.dtype = "bfloat16"
    cfg.model.remat = True
    return cfg
