"""DPO (sigmoid; cDPO label smoothing and IPO as options) on ComparisonRecord pairs, from the SFT
policy and against it as the frozen reference.

    python -m almost_jax.jobs.dpo --config=configs/mini/dpo.py [--config.dpo.loss=ipo] [--config.dpo.label_smoothing=0.1]

The reference log-probs are precomputed in one pass over the pairs before training
(`dpo.reference=precomputed`) or computed each step (`on_the_fly`). Writes params/, checkpoints/,
metrics.jsonl (`train/loss`, `train/reward_accuracy`, `train/reward_margin`, ...), manifest.json
(pair counts, truncations, final metrics).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.source import resolve
from almost_jax.data.schemas import ComparisonRecord, load_jsonl
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.learners import preference
from almost_jax.models.llama import CausalLM, param_shardings
from almost_jax.parallel import MeshConfig, make_mesh, rules_from_config
from almost_jax.train.runner import fit

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Policy:
    """The start policy of a preference job, loaded straight into its shards on the job's mesh."""
    model_cfg: object
    tokenizer: object
    params: dict
    mesh: object
    rules: tuple

    def load(self, path) -> dict:
        """Other params of the same architecture (a later round's policy), placed like these."""
        return load_model_params(path, self.model_cfg, shardings=param_shardings(self.model_cfg, self.mesh, self.rules))


def load_policy(cfg: ConfigDict) -> Policy:
    """`init_from` with its architecture and tokenizer, sharded on the mesh of cfg.mesh (the mesh
    `fit` builds from the same block)."""
    src = resolve(cfg, "init_from")
    mesh, rules = make_mesh(MeshConfig.from_config(cfg.mesh)), rules_from_config(cfg.mesh.get("rules"))
    params = load_model_params(src.params, src.model, shardings=param_shardings(src.model, mesh, rules))
    return Policy(src.model, src.tokenizer, params, mesh, rules)


def with_steps(cfg: ConfigDict, n_rows: int, epochs: float) -> ConfigDict:
    """A copy of the job config whose train.steps covers `epochs` passes over `n_rows` when
    train.steps is 0 (as configured, otherwise)."""
    job = copy.deepcopy(cfg)
    if int(job.train.steps) <= 0:
        with job.unlocked():
            job.train.steps = max(1, math.ceil(float(epochs) * n_rows / int(job.train.batch_size)))
    return job


def train_pairs(cfg: ConfigDict, policy: Policy, records, workdir: Path, init_params, ref_params,
                epochs: float, smoothing_fn=None, extra_rows=None, desc: str = "dpo"):
    """DPO (cfg.dpo) on `records` from `init_params` against `ref_params`, with the shared trainer.
    `extra_rows(arrays, job) -> dict` adds per-pair columns the loss reads (SPA's refine_alpha).
    Returns (params, last metrics, pair counts)."""
    P, R = int(cfg.data.prompt_len), int(cfg.data.response_len)
    model_cfg, tokenizer = policy.model_cfg, policy.tokenizer
    preference.check_dpo_config(cfg.dpo)
    arrays, stats = preference.pair_arrays(tokenizer, records, P, R)
    model = CausalLM(model_cfg)
    job = with_steps(cfg, stats["pairs"], epochs)
    if cfg.dpo.reference == "precomputed":
        arrays.update(preference.reference_logprobs(model, ref_params, arrays, P, int(cfg.ref_batch_size),
                                                    tokenizer.vocab_size, policy.mesh, policy.rules))
    if extra_rows is not None:
        arrays.update(extra_rows(arrays, job))
    loss_fn = preference.make_dpo_loss(model, cfg.dpo, P, tokenizer.vocab_size,
                                       ref_params if cfg.dpo.reference == "on_the_fly" else None, smoothing_fn)
    log.info("%s: %d pairs (%s), %d steps of %d", desc, stats["pairs"], stats, int(job.train.steps),
             int(job.train.batch_size))
    params, metrics = fit(job, model_cfg, loss_fn, arrays, workdir, init_params, desc=desc)
    return params, metrics, {**stats, "steps": int(job.train.steps)}


def run(cfg: ConfigDict) -> dict:
    workdir = Path(cfg.workdir)
    policy = load_policy(cfg)
    records = load_jsonl(cfg.data.train, ComparisonRecord, cfg.data.on_error)
    if not records:
        raise ValueError(f"no comparisons in {cfg.data.train}")
    _, metrics, stats = train_pairs(cfg, policy, records, workdir, policy.params, policy.params,
                                    float(cfg.train.epochs))
    summary = {**stats, **{f"final_{k}": v for k, v in metrics.items()
                           if k in ("loss", "reward_accuracy", "reward_margin", "logp_chosen", "logp_rejected")}}
    write_manifest(workdir / "manifest.json", cfg, **summary)
    return summary


if __name__ == "__main__":
    run_job(run)
