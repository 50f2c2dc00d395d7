"""Optimizer and learning-rate schedule from the `optimizer` block of a job config."""
from __future__ import annotations

import jax
import optax


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
    """Warmup (steps or ratio of total) then cosine / linear decay / constant, as in HF Trainer."""
    total_steps = max(int(total_steps), 1)
    warmup = int(opt_cfg.get("warmup_steps", 0) or round(float(opt_cfg.get("warmup_ratio", 0.0)) * total_steps))
    lr = float(opt_cfg.lr)
    end = lr * float(opt_cfg.get("min_lr_ratio", 0.0))
    kind = opt_cfg.get("schedule", "cosine")
    decay_steps = max(total_steps - warmup, 1)
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(lr, end, decay_steps)
    elif kind == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"optimizer.schedule must be cosine, linear or constant; got {kind!r}")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params):
    """Weight decay on matrices only (not norms/scalars), as HF Trainer and AlpacaFarm do."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(opt_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(opt_cfg, total_steps)
    name = opt_cfg.get("name", "adamw")
    if name == "adamw":
        tx = optax.adamw(schedule, b1=float(opt_cfg.get("b1", 0.9)), b2=float(opt_cfg.get("b2", 0.999)),
                         eps=float(opt_cfg.get("eps", 1e-8)), weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
                         mask=decay_mask)
    elif name == "adafactor":
        tx = optax.adafactor(schedule, weight_decay_rate=float(opt_cfg.get("weight_decay", 0.0)) or None)
    elif name == "sgd":
        tx = optax.sgd(schedule, momentum=opt_cfg.get("momentum"))
    else:
        raise ValueError(f"optimizer.name must be adamw, adafactor or sgd; got {name!r}")
    clip = float(opt_cfg.get("grad_clip", 0.0) or 0.0)
    if clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule
