"""The SFT job's config block, shared by the mini and pod configs."""
from ml_collections import ConfigDict

from almost_jax.config_lib import distributed_block, mesh_block, model_block, optimizer_block, tokenizer_fields, train_block


def sft_config(preset: str = "mini-s", **train_overrides) -> ConfigDict:
    """ALMoST's SFT recipe (official README): lr 2e-5, 3 epochs, 64 sequences per step, max length
    512, cosine, 3% warmup, no weight decay; loss only on assistant tokens."""
    cfg = ConfigDict()
    cfg.name = "sft"
    cfg.workdir = "work_dir/sft"
    cfg.init_from = ""  # almost_jax params dir or HF dir (which then also gives architecture and tokenizer)
    cfg.export_hf = False
    cfg.model = model_block(preset=preset)
    # pipeline: "numpy" (sft_data.to_rows) or "seqio" (almost_jax.data.seqio_tasks; same examples).
    cfg.data = ConfigDict(dict(train="", format="dialogues", mode="per_turn", pack=True, eval_fraction=0.05,
                               **tokenizer_fields(), on_error="skip", pipeline="numpy"))
    cfg.optimizer = optimizer_block(lr=2e-5, weight_decay=0.0, schedule="cosine", warmup_ratio=0.03)
    train = dict(steps=0, batch_size=64, seq_len=512, log_every=10, eval_every=200, checkpoint_every=500)
    train.update(train_overrides)
    cfg.train = train_block(**train)
    cfg.train.epochs = 3.0
    cfg.eval_batch_size = 32
    cfg.mesh = mesh_block()
    cfg.distributed = distributed_block()
    return cfg
