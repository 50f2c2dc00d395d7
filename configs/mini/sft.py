"""SFT of the smallest mini model on RMSP dialogues (CPU, ~a minute)."""
from almost_jax.jobs.sft_config import sft_config


def get_config():
    cfg = sft_config("mini-s", batch_size=32, seq_len=128, eval_every=50, checkpoint_every=100)
    cfg.optimizer.lr = 1e-3
    cfg.eval_batch_size = 32
    return cfg
