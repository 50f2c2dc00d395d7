"""Reward model on the mini world (initialised from the largest mini model); CPU, ~minutes."""
from almost_jax.jobs.reward_config import reward_config


def get_config():
    cfg = reward_config("mini-l", batch_size=32, seq_len=128, eval_every=50, checkpoint_every=100)
    cfg.optimizer.lr = 3e-4
    cfg.optimizer.weight_decay = 0.0
    cfg.train.epochs = 2.0
    cfg.eval_batch_size = 64
    return cfg
