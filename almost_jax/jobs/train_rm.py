"""Train ALMoST's reward model on synthetic comparisons.

    python -m almost_jax.jobs.train_rm --config=configs/mini/reward.py --config.data.train=comparisons.jsonl

Initialised from an LM checkpoint (`init_from`: almost_jax params dir or HF dir); the trunk is
kept, the bias-free score head is new. Held-out pairs (a file, or a deterministic fraction of the
training queries) are scored every `train.eval_every` steps. Writes params/, rm_contract.json (the
RM's scoring contract: template, max length, truncation, architecture, tokenizer, and the mean/std of
raw rewards on `stats_reference_pairs` training pairs, for RL's normalisation), metrics, manifest.json.
Load the result with `learners.reward.load_reward_model(workdir)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params, with_score_head
from almost_jax.checkpoints.source import resolve
from almost_jax.data.rm_data import RewardContract, comparison_rows
from almost_jax.data.schemas import ComparisonRecord, load_jsonl
from almost_jax.data.truncation import Truncations
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.learners.reward import RewardScorer, make_reward_loss, with_reward_stats
from almost_jax.models.llama import ScalarHeadModel
from almost_jax.train.runner import fit

log = logging.getLogger(__name__)


def split_by_prompt(records, eval_fraction: float, salt: str = "rm-heldout"):
    """Deterministic held-out split by prompt, so no held-out query is seen in training."""
    def is_eval(prompt):
        h = int(hashlib.sha256((salt + prompt).encode()).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < eval_fraction
    train = [r for r in records if not is_eval(r.prompt)]
    return train, [r for r in records if is_eval(r.prompt)]


def steps_for(cfg: ConfigDict, n_pairs: int) -> int:
    if int(cfg.train.steps) > 0:
        return int(cfg.train.steps)
    return max(1, math.ceil(float(cfg.train.epochs) * n_pairs / int(cfg.train.batch_size)))


def run(cfg: ConfigDict) -> dict:
    workdir = Path(cfg.workdir)
    src = resolve(cfg, "init_from")  # an HF init_from gives the architecture and tokenizer too
    model_cfg, tok = src.model, src.tokenizer
    records = load_jsonl(cfg.data.train, ComparisonRecord, cfg.data.on_error)
    if cfg.data.eval:
        train, heldout = records, load_jsonl(cfg.data.eval, ComparisonRecord, cfg.data.on_error)
    else:
        train, heldout = split_by_prompt(records, float(cfg.data.eval_fraction))
    if not train:
        raise ValueError(f"no training comparisons in {cfg.data.train}")
    contract = RewardContract(input_template=cfg.data.input_template, max_len=int(cfg.train.seq_len),
                              architecture=dataclasses.asdict(model_cfg),
                              tokenizer=str(Path(tok.path).absolute()), tokenizer_vocab_size=tok.vocab_size)
    truncations = Truncations("reward-model training input")
    rows = comparison_rows(tok, train, contract.max_len, contract.input_template, truncations)
    truncations.report()
    n_pairs = len(rows["chosen_ids"])
    with cfg.unlocked():
        cfg.train.steps = steps_for(cfg, n_pairs)
    log.info("reward model: %d training pairs, %d held out, %d steps", n_pairs, len(heldout), cfg.train.steps)

    model = ScalarHeadModel(model_cfg)
    lm = load_model_params(src.params, model_cfg)
    init = with_score_head(lm, model_cfg, jax.random.key(int(cfg.train.seed)), float(cfg.head_init_std))

    def scorer(params):  # the in-memory RM under the very contract saved with it
        return RewardScorer(model, params, tok, contract, int(cfg.eval_batch_size))

    def evaluate(params):
        if not heldout:
            return {}
        acc, rc, rr = scorer(params).accuracy([r.prompt for r in heldout], [r.chosen for r in heldout],
                                              [r.rejected for r in heldout])
        return {"accuracy": acc, "margin": float(np.mean(rc - rr))}

    params, metrics = fit(cfg, model_cfg, make_reward_loss(model), rows, workdir, init, head="scalar",
                          eval_fn=evaluate, desc="reward")
    ref = train[: int(cfg.stats_reference_pairs)]
    if ref:
        final = scorer(params)
        prompts = [r.prompt for r in ref]
        contract = with_reward_stats(contract, np.concatenate([final.raw_scores(prompts, [r.chosen for r in ref]),
                                                               final.raw_scores(prompts, [r.rejected for r in ref])]))
    if jax.process_index() == 0:
        contract.save(workdir)
    summary = {"train_pairs": n_pairs, "heldout_pairs": len(heldout), "steps": int(cfg.train.steps),
               "final_loss": metrics.get("loss"), "heldout_accuracy": metrics.get("eval_accuracy"),
               "reward_mean": contract.reward_mean, "reward_std": contract.reward_std,
               "truncated_inputs": truncations.as_dict()}
    write_manifest(workdir / "manifest.json", cfg, **summary)
    return summary


if __name__ == "__main__":
    run_job(run)
