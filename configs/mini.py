"""The whole ALMoST pipeline on the CPU mini world: the project's embedded default.

    python -m almost_jax.pipeline --config=configs/mini.py

Budget: 2 CPU cores, <= 30 minutes end to end. Every block can be overridden, e.g.
`--config.family.S.steps=200` for a quick smoke run.
"""
from ml_collections import ConfigDict

from almost_jax.config_lib import distributed_block, mesh_block, model_block, optimizer_block, train_block

FAMILIES = ["add", "sort", "upper", "capital", "harmful"]


def get_config() -> ConfigDict:
    cfg = ConfigDict()
    cfg.workdir = "work_dir/mini"
    cfg.mesh = mesh_block()
    cfg.distributed = distributed_block()

    # 1. The world: corpus + tokenizer + held-out evaluation tasks (see almost_jax/miniworld).
    cfg.world = ConfigDict(dict(
        seed=0, n_docs=60000, vocab_size=512, families=FAMILIES, eval_per_family=40, seed_queries_per_family=40,
        corpus=ConfigDict(dict(filler_fraction=0.15, sloppy_fraction=0.4)),
    ))

    # 2. The family of vanilla models of different sizes (ALMoST's "larger > smaller" prior).
    #    Equal token budgets, so the larger model is never the less-trained one.
    cfg.family = ConfigDict(dict(
        S=ConfigDict(dict(preset="mini-s", steps=800)),
        M=ConfigDict(dict(preset="mini-m", steps=800)),
        L=ConfigDict(dict(preset="mini-l", steps=800)),
    ))
    cfg.pretrain = ConfigDict(dict(
        name="pretrain", workdir="", model=model_block(preset="mini-s"), mesh=mesh_block(),
        distributed=distributed_block(),
        data=ConfigDict(dict(corpus="", tokenizer="", allow_vocab_padding=0, on_error="raise")),
        optimizer=optimizer_block(lr=3e-3, weight_decay=0.01, schedule="cosine", warmup_ratio=0.05, min_lr_ratio=0.1,
                                  b2=0.98, grad_clip=1.0),
        train=train_block(steps=800, batch_size=32, seq_len=128, log_every=50, checkpoint_every=200),
    ))
    return cfg
