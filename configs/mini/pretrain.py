"""Pretrain one model of the mini family on the mini-world corpus (CPU, minutes).

The pipeline (configs/mini.py) fills in data paths and the model preset per family member.
"""
from ml_collections import ConfigDict

from almost_jax.config_lib import (distributed_block, mesh_block, model_block, optimizer_block,
                                   train_block)


def get_config() -> ConfigDict:
    cfg = ConfigDict()
    cfg.name = "pretrain"
    cfg.workdir = "work_dir/mini/pretrain"
    cfg.model = model_block(preset="mini-s")
    cfg.data = ConfigDict(dict(corpus="", tokenizer="", allow_vocab_padding=0, on_error="raise"))
    cfg.optimizer = optimizer_block(lr=3e-3, weight_decay=0.01, schedule="cosine", warmup_ratio=0.05,
                                    min_lr_ratio=0.1, b2=0.98, grad_clip=1.0)
    cfg.train = train_block(steps=1000, batch_size=32, seq_len=256, log_every=50, checkpoint_every=250)
    cfg.mesh = mesh_block()
    cfg.distributed = distributed_block()
    return cfg
