"""CUT: learning from (instruction, response, judgment) triples with likelihood on appropriate tokens
and unlikelihood on the tokens the judgment flags (learners/cut.py, peers.md 2).

    python -m almost_jax.jobs.cut --config=configs/mini/cut.py [--config.cut.threshold=1.2]

data.train: JudgmentRecord jsonl; an empty judgment marks a satisfactory response (Align-P). Positives
are downsampled to `cut.positive_ratio` x the negatives. Writes params/, checkpoints/, metrics.jsonl
(`train/unlikelihood_loss`, `train/mle_loss`, `train/flagged_fraction`, ...), manifest.json.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.data.schemas import JudgmentRecord, load_jsonl
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.jobs.dpo import load_policy, with_steps
from almost_jax.learners import cut
from almost_jax.models.llama import CausalLM
from almost_jax.train.runner import fit

log = logging.getLogger(__name__)


def run(cfg: ConfigDict) -> dict:
    workdir = Path(cfg.workdir)
    c = cfg.cut
    policy = load_policy(cfg)
    tok = policy.tokenizer
    records = load_jsonl(cfg.data.train, JudgmentRecord, cfg.data.on_error)
    if not records:
        raise ValueError(f"no judgments in {cfg.data.train}")
    kept = cut.downsample_positives(records, float(c.positive_ratio), int(c.seed))
    P = int(cfg.data.prompt_len)
    arrays, stats = cut.cut_arrays(tok, kept, P, int(cfg.data.response_len), c.judged_template)
    job = with_steps(cfg, stats["examples"], float(cfg.train.epochs))
    log.info("cut: %s, %d steps of %d", stats, int(job.train.steps), int(job.train.batch_size))
    loss_fn = cut.make_cut_loss(CausalLM(policy.model_cfg), c, P, tok.vocab_size)
    _, metrics = fit(job, policy.model_cfg, loss_fn, arrays, workdir, policy.params, desc="cut")
    summary = {"records": len(records), **stats, "steps": int(job.train.steps),
               **{f"final_{k}": v for k, v in metrics.items()
                  if k in ("loss", "unlikelihood_loss", "mle_loss", "flagged_fraction")}}
    write_manifest(workdir / "manifest.json", cfg, **summary)
    return summary


if __name__ == "__main__":
    run_job(run)
