"""ALMoST SFT at paper scale: LLaMA-1 7B on RMSP dialogues (paper recipe), TPU pod / GPU host."""
from almost_jax.jobs.sft_config import sft_config


def get_config():
    cfg = sft_config("llama1-7b", batch_size=64, seq_len=512)
    cfg.workdir = "gs://YOUR_BUCKET/almost/sft_7b"
    cfg.export_hf = True
    cfg.model.dtype = "bfloat16"
    cfg.model.remat = True
    return cfg
