"""ALMoST SFT at paper scale: LLaMA-1 7B on the RMSP dialogues (lr 2e-5, 3 epochs, 64 sequences per
step, 512 tokens, cosine, 3% warmup), exported to Hugging Face format at the end; TPU pod / GPU host.

    launch/tpu_run.sh --name=almost --zone=us-central2-b --accelerator=v4-32 --mount=YOUR_BUCKET -- \
      python -m almost_jax.jobs.sft --config=configs/pod/sft_llama1_7b.py
"""
from almost_jax.jobs.sft_config import sft_config

BUCKET = "/gcs/YOUR_BUCKET"


def get_config():
    cfg = sft_config("llama1-7b", batch_size=64, seq_len=512)
    cfg.workdir = f"{BUCKET}/almost/sft_7b"
    cfg.init_from = f"{BUCKET}/models/llama1-7b-hf"
    cfg.data.train = f"{BUCKET}/almost/rmsp/dialogues.jsonl"
    cfg.data.tokenizer = f"{BUCKET}/models/llama1-7b-hf/tokenizer.model"
    cfg.export_hf = True
    cfg.model.dtype = "bfloat16"
    cfg.model.remat_policy = "full"
    cfg.model.scan_layers = True  # compile time flat in depth
    return cfg
