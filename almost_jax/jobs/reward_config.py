"""The reward-model job's config block, shared by the mini and pod configs."""
from ml_collections import ConfigDict

from almost_jax.config_lib import distributed_block, mesh_block, model_block, optimizer_block, train_block
from almost_jax.data.rm_data import DEFAULT_TEMPLATE


def reward_config(preset: str = "mini-l", **train_overrides) -> ConfigDict:
    """ALMoST's RM recipe (official code): lr 2e-5, weight decay 0.1, 1 epoch, cosine, 3% warmup,
    128 pairs per step, max length 1024, left truncation, score at the appended EOS."""
    cfg = ConfigDict()
    cfg.name = "reward"
    cfg.workdir = "work_dir/reward"
    cfg.init_from = ""  # LM checkpoint: almost_jax params dir or HF dir
    cfg.head_init_std = 0.02
    cfg.model = model_block(preset=preset)
    cfg.data = ConfigDict(dict(train="", eval="", eval_fraction=0.1, tokenizer="", allow_vocab_padding=0,
                               on_error="raise", input_template=DEFAULT_TEMPLATE))
    cfg.optimizer = optimizer_block(lr=2e-5, weight_decay=0.1, schedule="cosine", warmup_ratio=0.03)
    train = dict(steps=0, batch_size=128, seq_len=1024, log_every=10, eval_every=100, checkpoint_every=200)
    train.update(train_overrides)
    cfg.train = train_block(**train)
    cfg.train.epochs = 1.0  # used when train.steps == 0
    cfg.eval_batch_size = 32
    cfg.stats_reference_pairs = 1000  # reward mean/std for PPO's normalisation
    cfg.mesh = mesh_block()
    cfg.distributed = distributed_block()
    return cfg
