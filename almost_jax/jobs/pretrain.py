"""Language-model (pre)training on a document corpus: the mini family, or continued pretraining.

    python -m almost_jax.jobs.pretrain --config=configs/mini/pretrain.py --config.workdir=/tmp/run

`init_from` (optional): continue pretraining from an almost_jax params dir or an HF dir (which then
also gives the architecture and tokenizer); empty = a fresh model of `model.preset`.
Corpus: JSONL with a "text" field per line (corrupt lines are reported with their line number).
Outputs in workdir: checkpoints/ (resumable), params/ (final model), metrics.jsonl + TensorBoard
events, manifest.json.
"""
from __future__ import annotations

import logging
from pathlib import Path

import jax
from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.source import resolve
from almost_jax.data.lm_data import lm_rows, pack_documents, read_text_corpus
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.learners.lm import make_lm_loss
from almost_jax.models.llama import CausalLM, init_params
from almost_jax.train.runner import fit

log = logging.getLogger(__name__)


def run(cfg: ConfigDict) -> Path:
    workdir = Path(cfg.workdir)
    src = resolve(cfg, "init_from")
    model_cfg, tok = src.model, src.tokenizer
    docs = read_text_corpus(cfg.data.corpus, cfg.data.get("on_error", "raise"))
    packed = pack_documents((tok.encode(d) for d in docs), int(cfg.train.seq_len), tok.eos_id,
                            tok.bos_id if tok.add_bos else None)
    log.info("pretrain: %d documents -> %d rows of %d tokens", len(docs), len(packed), cfg.train.seq_len)
    model = CausalLM(model_cfg)
    if src.params:  # loaded params (a tree), or a function the trainer traces to initialise fresh ones
        init = load_model_params(src.params, model_cfg)
    else:
        init = lambda: init_params(model_cfg, jax.random.key(int(cfg.train.seed)))  # noqa: E731
    params, metrics = fit(cfg, model_cfg, make_lm_loss(model), lm_rows(packed), workdir, init,
                          desc=cfg.get("name", "pretrain"))
    write_manifest(workdir / "manifest.json", cfg, documents=len(docs), rows=int(len(packed)),
                   final_loss=metrics.get("loss"), params=model_cfg.num_params())
    return workdir / "params"


if __name__ == "__main__":
    run_job(run)
