"""SPA ("Selfie"): DPO on a small labelled seed, then rounds of self-annotation (peers.md 3).

    python -m almost_jax.jobs.spa --config=configs/mini/spa.py [--config.spa.iterations=3]

Round 0: DPO on `data.seed_pairs` from `init_from` (the SFT policy), reference = the SFT policy.
Round i >= 1: the next `spa.prompts_per_iteration[i-1]` prompts of `data.prompts`; the current policy
samples `spa.samples_per_prompt` replies to each; each reply's implicit reward is
log pi_cur - log pi_sft; the best and worst reply make a pair (learners/spa.py); DPO with
self-refinement (label smoothing alpha on the pairs whose margin falls in the lowest `quantile`)
from the current policy with reference = the current policy, `iteration_epochs` passes.

Each round trains in workdir/round_<i>/ (its params/, checkpoints, metrics; round i's pairs in
pairs.jsonl); a finished round (its manifest.json) is not rerun. The final policy: workdir/params.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from almost_jax.data import chat
from almost_jax.data.schemas import ComparisonRecord, PromptRecord, load_jsonl, write_jsonl_atomic
from almost_jax.data.lm_data import RowBatches
from almost_jax.jobs.common import read_manifest, run_job, write_manifest
from almost_jax.jobs.dpo import Policy, load_policy, train_pairs
from almost_jax.learners import preference, spa
from almost_jax.models.llama import CausalLM
from almost_jax.sampling import Sampler, SamplingConfig

log = logging.getLogger(__name__)


def refine_alpha_rows(sc: ConfigDict, seed: int):
    """train_pairs' extra_rows: each pair's alpha, 0 when first trained in the warm-up steps."""
    def rows(arrays, job):
        n, steps, batch = len(arrays["chosen_input_ids"]), int(job.train.steps), int(job.train.batch_size)
        batches = RowBatches(arrays, batch, seed=seed)  # the order fit will draw (same batch size and seed)
        first = np.full(n, steps, np.int64)
        for s in range(steps):
            idx = batches.global_indices(s)
            first[idx] = np.minimum(first[idx], s)
        return {"refine_alpha": spa.refine_alpha_column(first, steps, float(sc.alpha), float(sc.warmup_fraction))}
    return rows


def self_label(sampler: Sampler, start: Policy, cfg: ConfigDict, queries: list[str], policy, reference,
               seed: int, label: str) -> list[ComparisonRecord]:
    """Sample K replies per query from `policy`, label the extreme pair by implicit reward."""
    k = int(cfg.spa.samples_per_prompt)
    prompts = [chat.prompt_for_reply([], q) for q in queries]
    comps = list(sampler.generate(prompts, seed=seed, progress=False, params=policy))
    replies = [chat.extract_reply(c.text) for c in comps]
    turns = [chat.format_turn(chat.HUMAN, q) for q in queries for _ in range(k)]
    tok = start.tokenizer
    rows, _ = preference.response_arrays(tok, turns, replies, int(cfg.data.prompt_len), int(cfg.data.response_len))
    logp = lambda p: preference.batched_logprobs(sampler.model, p, rows, int(cfg.data.prompt_len),  # noqa: E731
                                                 int(cfg.ref_batch_size), tok.vocab_size, start.mesh, start.rules)
    rewards = spa.implicit_rewards(logp(policy), logp(reference)).reshape(len(queries), k)
    grouped = [replies[i * k:(i + 1) * k] for i in range(len(queries))]
    return spa.label_by_implicit_reward(turns[::k], grouped, rewards, label)


def run(cfg: ConfigDict) -> dict:
    out = Path(cfg.workdir)
    sc = cfg.spa
    start = load_policy(cfg)
    sft = start.params
    seed_pairs = load_jsonl(cfg.data.seed_pairs, ComparisonRecord, cfg.data.on_error)
    prompts = load_jsonl(cfg.data.prompts, PromptRecord, cfg.data.on_error) if int(sc.iterations) else []
    sizes = [int(n) for n in sc.prompts_per_iteration]
    if len(sizes) < int(sc.iterations) or sum(sizes[:int(sc.iterations)]) > len(prompts):
        raise ValueError(f"spa: {sc.iterations} iterations need prompts_per_iteration for each "
                         f"({sizes}) and that many fresh prompts ({len(prompts)} in {cfg.data.prompts})")
    sampler = Sampler(CausalLM(start.model_cfg), None, start.tokenizer, SamplingConfig(
        temperature=float(sc.sampling.temperature), top_p=float(sc.sampling.top_p),
        max_new_tokens=int(sc.sampling.max_new_tokens), n=int(sc.samples_per_prompt),
        stop_strings=tuple(sc.sampling.stop_strings)), batch_size=int(sc.sampling_batch_size), bucket=32,
        mesh=start.mesh, rules=start.rules)
    summary, policy, offset = {}, sft, 0
    for i in range(int(sc.iterations) + 1):
        rdir = out / f"round_{i}"
        done = read_manifest(rdir / "manifest.json")
        if i == 0:
            records, epochs, ref, smoothing, extra = seed_pairs, float(sc.seed_epochs), sft, None, None
        else:
            queries = [p.prompt for p in prompts[offset:offset + sizes[i - 1]]]
            offset += sizes[i - 1]
            if (rdir / "pairs.jsonl").exists():  # labelled before a restart: the same pairs again
                records = load_jsonl(rdir / "pairs.jsonl", ComparisonRecord)
            else:
                records = self_label(sampler, start, cfg, queries, policy, sft, int(sc.seed) * 1000 + i, f"spa-{i}")
                rdir.mkdir(parents=True, exist_ok=True)
                write_jsonl_atomic(rdir / "pairs.jsonl", records)
            epochs, ref = float(sc.iteration_epochs), policy
            smoothing, extra = spa.make_smoothing_fn(float(sc.quantile)), refine_alpha_rows(sc, int(cfg.train.seed))
        if done:
            policy = start.load(rdir / "params")
            stats = done["round"]
        else:
            policy, metrics, stats = train_pairs(cfg, start, records, rdir, policy, ref, epochs, smoothing, extra,
                                                 desc=f"spa-{i}")
            stats.update({f"final_{k}": v for k, v in metrics.items()
                          if k in ("loss", "reward_accuracy", "reward_margin", "label_smoothing")})
            write_manifest(rdir / "manifest.json", cfg, round=stats)
        summary.update({f"round{i}_{k}": v for k, v in stats.items()})
    final = out / "params"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(out / f"round_{int(sc.iterations)}" / "params", final)
    write_manifest(out / "manifest.json", cfg, **summary)
    return summary


if __name__ == "__main__":
    run_job(run)
