"""The offline preference methods as mini-pipeline stages: DPO on the synthetic comparisons, DPO on
the same pairs relabelled by the oracle (a control), SPA and CUT. Each starts from the RM-guided SFT
policy of the first seed (`<workdir>/sft/seed_<seeds[0]>/rm/params`, PPO's start), uses it as the reference, writes its final policy
to `out/params` and returns a summary whose `policies` entries the report turns into rows.

The job configs are derived here from the pipeline config's `dpo`, `spa` and `cut` blocks
(`almost_jax.jobs.preference_config.add_preference_blocks`), as pipeline/job_configs.py does for
the other stages; `configs/mini/{dpo,spa,cut}.py` call these too.

Where the oracle enters (never to evaluate-and-select; evaluation is on the held-out tasks):
  * dpo_oracle: the oracle labels the training pairs: a marked control (how far label noise holds DPO back);
  * spa: the small seed of labelled pairs is oracle-labelled, standing in for SPA's human seed;
  * cut: the judgments are the oracle's explanations of what is wrong with SFT replies on the RL
    queries: the supervision CUT is defined to learn from, standing in for a human critique.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from almost_jax.jobs.preference_config import add_preference_blocks  # noqa: F401  (the blocks the stages read)
from almost_jax.evaluation.oracle_pairs import oracle_relabelled
from almost_jax.pipeline.job_configs import sampler_setup, sft_start, world_paths
from almost_jax.pipeline.report import policy_replies


def _from_sft(job: ConfigDict, cfg: ConfigDict, out: Path, block: ConfigDict) -> ConfigDict:
    """Fill what every preference job takes from the pipeline: the SFT start, its architecture and
    tokenizer, lengths, learning rate, batch size and seed from the stage's block."""
    with job.unlocked():
        job.workdir = str(out)
        job.init_from = str(sft_start(cfg))
        job.model.preset = cfg.family[cfg.sft_member].preset
        job.data.tokenizer = str(world_paths(Path(cfg.workdir))["tokenizer"])
        job.optimizer.lr = float(block.lr)
        job.optimizer.warmup_steps = 0
        job.train.update(dict(batch_size=int(block.batch_size), seed=int(block.seed), log_every=10,
                              checkpoint_every=200, progress=False))
        job.mesh = copy.deepcopy(cfg.mesh)
    return job


def dpo_job(cfg: ConfigDict, out: Path, train_file: Path) -> ConfigDict:
    from almost_jax.jobs.preference_config import dpo_config
    d = cfg.dpo
    job = _from_sft(dpo_config(), cfg, out, d)
    with job.unlocked():
        job.data.update(dict(train=str(train_file), prompt_len=int(d.prompt_len), response_len=int(d.response_len)))
        job.dpo.update(dict(loss=d.loss, beta=float(d.beta), label_smoothing=float(d.label_smoothing),
                            reference=d.reference))
        job.train.epochs = float(d.epochs)
    return job


def spa_job(cfg: ConfigDict, out: Path, seed_file: Path) -> ConfigDict:
    from almost_jax.jobs.preference_config import spa_config
    s = cfg.spa
    job = _from_sft(spa_config(), cfg, out, s)
    with job.unlocked():
        job.data.update(dict(seed_pairs=str(seed_file), prompts=str(Path(cfg.workdir) / "queries" / "rl.jsonl"),
                             prompt_len=int(s.prompt_len), response_len=int(s.response_len)))
        job.dpo.beta = float(s.beta)
        job.spa.update(dict(iterations=int(s.iterations), prompts_per_iteration=tuple(s.prompts_per_iteration),
                            samples_per_prompt=int(s.samples_per_prompt), seed_epochs=float(s.seed_epochs),
                            iteration_epochs=float(s.iteration_epochs), alpha=float(s.alpha),
                            quantile=float(s.quantile), warmup_fraction=float(s.warmup_fraction), seed=int(s.seed),
                            sampling_batch_size=int(cfg.sampling_batch_size)))
        job.spa.sampling.update(dict(temperature=float(s.temperature), max_new_tokens=int(s.max_new_tokens),
                                     stop_strings=tuple(cfg.policy_eval.sampling.stop_strings)))
    return job


def cut_job(cfg: ConfigDict, out: Path, judgments_file: Path) -> ConfigDict:
    from almost_jax.jobs.preference_config import cut_config
    c = cfg.cut
    job = _from_sft(cut_config(), cfg, out, c)
    with job.unlocked():
        job.data.update(dict(train=str(judgments_file), prompt_len=int(c.prompt_len), response_len=int(c.response_len)))
        job.cut.update(dict(threshold=float(c.threshold), alpha=float(c.alpha), gamma=float(c.gamma),
                            positive_ratio=float(c.positive_ratio), seed=int(c.seed)))
        job.train.epochs = float(c.epochs)
    return job


# ----- data the stages derive -----

def sample_judgments(cfg: ConfigDict, queries: list[str], out_file: Path) -> dict:
    """The SFT policy's replies to `queries` (cut.samples_per_prompt each, cut.temperature), each with
    the oracle's explanation of what is wrong ("" = nothing): CUT's (instruction, response,
    judgment) triples."""
    from almost_jax.data import chat
    from almost_jax.data.schemas import JudgmentRecord, write_jsonl_atomic
    from almost_jax.miniworld import oracle
    from almost_jax.synthetic.generation import build_sampler
    c = cfg.cut
    sampling = copy.deepcopy(cfg.policy_eval.sampling)
    with sampling.unlocked():
        sampling.temperature = float(c.temperature)
        sampling.n = int(c.samples_per_prompt)
    preset = cfg.family[cfg.sft_member].preset
    sampler = build_sampler(sampler_setup(cfg, preset, sft_start(cfg), sampling), sampling)
    comps = sampler.generate([chat.prompt_for_reply([], q) for q in queries], seed=int(c.seed), progress=False)
    records, seen = [], set()
    for comp in comps:
        q = queries[comp.prompt_index]
        reply = chat.extract_reply(comp.text)
        if (q, reply) in seen:
            continue
        seen.add((q, reply))
        records.append(JudgmentRecord(instruction=q, response=reply, judgment=oracle.critique(q, reply),
                                      id=f"cut-{len(records)}", meta={"oracle_score": oracle.score(q, reply)}))
    write_jsonl_atomic(out_file, records)
    negative = sum(bool(r.judgment) for r in records)
    return {"judgments": len(records), "judged_negative": negative,
            "sft_sample_oracle_score": float(np.mean([r.meta["oracle_score"] for r in records]))}


# ----- stage runners -----

def _scored(cfg: ConfigDict, out: Path, key: str, label: str, summary: dict) -> dict:
    """The trained policy's held-out replies (kept for the report, as the SFT and PPO stages keep
    theirs) and their oracle score (evaluation only)."""
    from almost_jax.data.schemas import write_json_atomic
    scores, replies = policy_replies(cfg, out / "params", cfg.family[cfg.sft_member].preset)
    write_json_atomic(out / "heldout_replies.json", replies)
    return {**summary, "policy_score": scores["score"], "policy_exact": scores["exact"],
            "policies": {key: {"label": label, "params": str(out / "params"),
                               "replies": str(out / "heldout_replies.json")}}}


def _synthetic_pairs(cfg: ConfigDict, max_pairs: int = 0, seed: int = 0):
    """The comparisons stage's synthetic pairs (the RM's training pairs); `max_pairs` > 0 keeps a
    random subset of that many, in file order."""
    from almost_jax.data.schemas import ComparisonRecord, load_jsonl
    records = load_jsonl(Path(cfg.workdir) / "comparisons" / "comparisons.jsonl", ComparisonRecord)
    if 0 < max_pairs < len(records):
        idx = np.random.default_rng(seed).permutation(len(records))[:max_pairs]
        records = [records[i] for i in sorted(idx)]
    return records


def _pairs(cfg: ConfigDict):
    return _synthetic_pairs(cfg, int(cfg.dpo.max_pairs), int(cfg.dpo.seed))


def run_dpo(cfg: ConfigDict, out: Path) -> dict:
    """DPO on the synthetic comparisons (the RM's training pairs), from and against the SFT policy."""
    from almost_jax.data.schemas import write_jsonl_atomic
    from almost_jax.jobs import dpo
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "pairs.jsonl", _pairs(cfg))
    result = dpo.run(dpo_job(cfg, out, out / "pairs.jsonl"))
    return _scored(cfg, out, "dpo", f"DPO on synthetic pairs (beta {cfg.dpo.beta})", result)


def run_dpo_oracle(cfg: ConfigDict, out: Path) -> dict:
    """CONTROL: DPO on the same synthetic pairs relabelled by the oracle (ties dropped)."""
    from almost_jax.data.schemas import write_jsonl_atomic
    from almost_jax.jobs import dpo
    out.mkdir(parents=True, exist_ok=True)
    pairs = _pairs(cfg)
    relabelled = oracle_relabelled(pairs)
    write_jsonl_atomic(out / "oracle_pairs.jsonl", relabelled)
    result = dpo.run(dpo_job(cfg, out, out / "oracle_pairs.jsonl"))
    result.update({"synthetic_pairs": len(pairs), "oracle_ties_dropped": len(pairs) - len(relabelled),
                   "labels_flipped_by_oracle": sum(r.provenance.filters["flipped"] for r in relabelled)})
    return _scored(cfg, out, "dpo_oracle", "DPO on oracle-labelled pairs (control)", result)


def run_spa(cfg: ConfigDict, out: Path) -> dict:
    """SPA from a seed of spa.seed_pairs oracle-labelled synthetic pairs, then spa.iterations rounds
    of self-labelled pairs on the RL queries."""
    from almost_jax.data.schemas import write_jsonl_atomic
    from almost_jax.jobs import spa
    out.mkdir(parents=True, exist_ok=True)
    labelled = oracle_relabelled(_synthetic_pairs(cfg))
    keep = np.random.default_rng(int(cfg.spa.seed)).permutation(len(labelled))[:int(cfg.spa.seed_pairs)]
    seed = [labelled[i] for i in sorted(keep)]
    write_jsonl_atomic(out / "seed_pairs.jsonl", seed)
    result = spa.run(spa_job(cfg, out, out / "seed_pairs.jsonl"))
    return _scored(cfg, out, "spa", f"SPA ({len(seed)} gold seed pairs, {cfg.spa.iterations} rounds)", result)


def run_cut(cfg: ConfigDict, out: Path) -> dict:
    """CUT on the SFT policy's replies to the RL queries with the oracle's judgments."""
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.jobs import cut
    out.mkdir(parents=True, exist_ok=True)
    queries = [p.prompt for p in load_jsonl(Path(cfg.workdir) / "queries" / "rl.jsonl", PromptRecord)]
    judged = sample_judgments(cfg, queries, out / "judgments.jsonl")
    result = cut.run(cut_job(cfg, out, out / "judgments.jsonl"))
    return _scored(cfg, out, "cut", "CUT (oracle judgments of SFT replies)", {**judged, **result})

