"""Supervised fine-tuning on dialogues (RMSP output) or demonstrations, loss on assistant tokens.

    python -m almost_jax.jobs.sft --config=configs/mini/sft.py --config.data.train=dialogues.jsonl

Writes params/, metrics (train loss; eval loss and perplexity every train.eval_every steps),
manifest.json, and with `export_hf` a Hugging Face checkpoint in hf/.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.source import resolve
from almost_jax.data.schemas import DemonstrationRecord, DialogueRecord, load_jsonl
from almost_jax.data.sft_data import example_from_pair, examples_from_dialogue, to_rows
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.learners.lm import make_lm_loss, masked_lm_loss
from almost_jax.models.llama import CausalLM
from almost_jax.train.runner import fit

log = logging.getLogger(__name__)


def load_examples(path: str, tokenizer, fmt: str, mode: str, on_error: str):
    if fmt == "dialogues":
        recs = load_jsonl(path, DialogueRecord, on_error)
        return [ex for r in recs for ex in examples_from_dialogue(tokenizer, [(t.speaker, t.text) for t in r.turns], mode)]
    if fmt == "demonstrations":
        return [example_from_pair(tokenizer, r.input, r.output) for r in load_jsonl(path, DemonstrationRecord, on_error)]
    raise ValueError(f"data.format must be dialogues or demonstrations, got {fmt!r}")


def eval_loss_fn(model, rows: dict, batch_size: int):
    """Token-weighted loss and perplexity over a held-out row set."""
    @jax.jit
    def batch_sums(params, b):
        logits, _ = model.apply({"params": params}, b["input_ids"], b["attention_mask"], b["positions"])
        loss, count = masked_lm_loss(logits, b["input_ids"], b["loss_mask"])
        return loss * count, count

    def evaluate(params):
        total, count, n = 0.0, 0.0, len(rows["input_ids"])
        for s in range(0, n - n % batch_size or n, batch_size):
            b = {k: jnp.asarray(v[s:s + batch_size]) for k, v in rows.items()}
            t, c = batch_sums(params, b)
            total, count = total + float(t), count + float(c)
        loss = total / max(count, 1.0)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    return evaluate


def run(cfg: ConfigDict) -> dict:
    workdir = Path(cfg.workdir)
    src = resolve(cfg, "init_from")  # an HF init_from gives the architecture and tokenizer too
    model_cfg, tok = src.model, src.tokenizer
    pipeline = cfg.data.get("pipeline", "numpy")
    if pipeline == "seqio":  # same examples through a registered seqio task, packed by seqio
        from almost_jax.data import seqio_tasks  # lazy: tensorflow must load after transformers/torch
        task = seqio_tasks.register_task(cfg.data.format, cfg.data.train, str(tok.path), mode=cfg.data.mode,
                                         on_error=cfg.data.on_error)
        examples = [(ex["input_ids"], ex["loss_mask"]) for ex in seqio_tasks.task_examples(task)]
        make_rows = seqio_tasks.pack_rows
    elif pipeline == "numpy":
        examples = load_examples(cfg.data.train, tok, cfg.data.format, cfg.data.mode, cfg.data.on_error)
        make_rows = to_rows
    else:
        raise ValueError(f"data.pipeline must be numpy or seqio, got {pipeline!r}")
    rng = np.random.default_rng(int(cfg.train.seed))
    order = rng.permutation(len(examples))
    n_eval = int(len(examples) * float(cfg.data.eval_fraction))
    train_ex = [examples[i] for i in order[n_eval:]]
    eval_ex = [examples[i] for i in order[:n_eval]]
    seq_len = int(cfg.train.seq_len)
    rows = make_rows(train_ex, seq_len, tok.pad_id, pack=bool(cfg.data.pack))
    if int(cfg.train.steps) <= 0:
        with cfg.unlocked():
            cfg.train.steps = max(1, math.ceil(float(cfg.train.epochs) * len(rows["input_ids"]) / int(cfg.train.batch_size)))
    log.info("sft: %d examples -> %d rows (packing=%s, pipeline=%s), %d held out, %d steps", len(train_ex),
             len(rows["input_ids"]), cfg.data.pack, pipeline, n_eval, cfg.train.steps)
    model = CausalLM(model_cfg)
    init = load_model_params(cfg.init_from, model_cfg)
    evaluate = eval_loss_fn(model, make_rows(eval_ex, seq_len, tok.pad_id, pack=False), int(cfg.eval_batch_size)) if eval_ex else None
    params, metrics = fit(cfg, model_cfg, make_lm_loss(model), rows, workdir, init, eval_fn=evaluate, desc="sft")
    if cfg.export_hf:
        from almost_jax.checkpoints.hf import save_hf_checkpoint
        save_hf_checkpoint(params, model_cfg, workdir / "hf")
    summary = {"examples": len(train_ex), "rows": int(len(rows["input_ids"])), "steps": int(cfg.train.steps),
               "final_loss": metrics.get("loss"), "eval_loss": metrics.get("eval_loss"),
               "eval_perplexity": metrics.get("eval_perplexity")}
    write_manifest(workdir / "manifest.json", cfg, **summary)
    return summary


if __name__ == "__main__":
    run_job(run)
