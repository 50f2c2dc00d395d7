"""The pipeline's stages in order: each runs its job(s) with the config that job_configs derives
from the pipeline config, and returns the summary the manifest records. Optional stages (the
related methods, method_stages.py) run only when named in `cfg.methods`."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ml_collections import ConfigDict

from almost_jax.pipeline.job_configs import (comparisons_job, family_params, generator_setup, member_config,
                                             ppo_job, queries_job, reward_job, rmsp_job, sft_job, world_paths)
from almost_jax.pipeline.method_stages import preference_runners, run_best_of_n, run_expert_iteration, run_rl_method
from almost_jax.pipeline.report import policy_scores, run_report


@dataclass(frozen=True)
class Stage:
    name: str
    config_keys: tuple[str, ...]  # top-level config blocks this stage reads
    run: Callable[[ConfigDict, Path], dict]  # (config, workdir) -> summary dict
    optional: bool = False  # a method stage: runs only when named in cfg.methods


def run_world(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.miniworld.build import build_world
    return build_world(cfg.world, out)


def run_pretrain(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.jobs import pretrain
    from almost_jax.jobs.common import read_manifest
    summary = {}
    for member in ("S", "M", "L"):
        job = member_config(cfg, member, out)
        pretrain.run(job)
        summary[f"{member}_loss"] = (read_manifest(Path(job.workdir) / "manifest.json") or {}).get("final_loss")
    return summary


def run_family_eval(cfg: ConfigDict, out: Path) -> dict:
    """Oracle scores of each vanilla model, zero-shot and k-shot, greedy and sampled (issue: the
    larger model must score higher)."""
    from almost_jax.data.schemas import PromptRecord, load_jsonl, write_json_atomic
    from almost_jax.data.templates import load_prompt_file, prompt_path
    from almost_jax.evaluation.oracle_eval import evaluate_policy
    from almost_jax.synthetic.generation import build_sampler
    ev = cfg.family_eval
    tasks = load_jsonl(world_paths(Path(cfg.workdir))["eval_tasks"], PromptRecord)
    template = load_prompt_file(prompt_path(ev.template))
    table = {}
    for member in ("S", "M", "L"):
        for mode, temperature in (("greedy", 0.0), ("sampled", float(ev.temperature))):
            sampling = copy.deepcopy(ev.sampling)
            sampling.temperature = temperature
            sampler = build_sampler(generator_setup(cfg, member, sampling), sampling)
            generate = lambda ps, s=sampler: [c.text for c in s.generate(ps, seed=int(ev.seed), progress=False)]  # noqa: E731
            for shots in ev.shots:
                res, _ = evaluate_policy(generate, tasks, template, int(shots))
                table[f"{member}_{mode}_{shots}shot"] = res
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "family_eval.json", table)
    return {k: v["score"] for k, v in table.items()}


def run_queries(cfg: ConfigDict, out: Path) -> dict:
    """Three query sets (RM comparisons, self-play, RL), disjoint by instruction."""
    from almost_jax.data.schemas import PromptRecord, load_jsonl, write_jsonl_atomic
    from almost_jax.jobs import queries
    seen, summary = set(), {}
    for name, n in cfg.queries.sets.items():
        job = queries_job(cfg, out, name)
        queries.run(job)
        recs = [r for r in load_jsonl(job.output, PromptRecord) if r.prompt not in seen][: int(n)]
        seen.update(r.prompt for r in recs)
        write_jsonl_atomic(job.output, recs)
        summary[name] = len(recs)
    return summary


def run_comparisons(cfg: ConfigDict, out: Path) -> dict:
    """Synthetic comparisons on the RM queries, plus oracle-labelled pairs on held-out tasks."""
    from almost_jax.data.schemas import ComparisonRecord, PromptRecord, load_jsonl, write_json_atomic, write_jsonl_atomic
    from almost_jax.evaluation.oracle_pairs import gold_pairs, mean_oracle_score, oracle_agreement
    from almost_jax.jobs import comparisons
    c = cfg.comparisons
    job = comparisons_job(cfg, out)
    summary = comparisons.run(job)
    synthetic = load_jsonl(out / "comparisons.jsonl", ComparisonRecord)
    summary.update({f"synthetic_{k}": v for k, v in oracle_agreement(synthetic).items() if k != "pairs"})
    # The same setups answer the held-out evaluation tasks: their oracle scores (the report's
    # per-setup rows) and gold-labelled pairs for measuring the RM.
    heldout = Path(out) / "heldout"
    eval_job = copy.deepcopy(job)
    with eval_job.unlocked():
        eval_job.workdir = str(heldout)
        eval_job.queries = str(world_paths(Path(cfg.workdir))["eval_tasks"])
    comparisons.run(eval_job)
    tasks = load_jsonl(eval_job.queries, PromptRecord)
    responses = {name: {r["id"]: r["response"] for r in comparisons.load_responses(heldout / "responses" / f"{name}.jsonl", tasks).values()}
                 for name in c.setups.keys()}
    write_jsonl_atomic(out / "gold_pairs.jsonl", gold_pairs(tasks, responses))
    setup_scores = {name: mean_oracle_score(tasks, resp) for name, resp in responses.items()}
    write_json_atomic(out / "setup_scores.json", setup_scores)
    summary.update({f"oracle_{k}": v for k, v in setup_scores.items()})
    summary["gold_pairs"] = len(load_jsonl(out / "gold_pairs.jsonl", ComparisonRecord))
    return summary


def run_reward(cfg: ConfigDict, out: Path) -> dict:
    """RM on filtered synthetic pairs, and (ablation) without the length filter; both measured on
    the oracle-labelled held-out pairs."""
    from almost_jax.evaluation.rm_accuracy import evaluate_file
    from almost_jax.jobs import train_rm
    from almost_jax.learners.reward import load_reward_model
    comp = Path(cfg.workdir) / "comparisons"
    summary = {}
    variants = [("rm", comp / "comparisons.jsonl")]
    if cfg.reward_ablation_nofilter:
        variants.append(("rm_nofilter", comp / "comparisons_nofilter.jsonl"))
    for name, train_file in variants:
        job = reward_job(cfg, out / name, train_file)
        result = train_rm.run(job)
        scorer = load_reward_model(out / name, batch_size=int(job.eval_batch_size))
        gold = evaluate_file(scorer, comp / "gold_pairs.jsonl", "comparisons")
        summary[f"{name}_heldout_synthetic_accuracy"] = result["heldout_accuracy"]
        summary[f"{name}_oracle_agreement"] = gold["accuracy"]
        summary[f"{name}_train_pairs"] = result["train_pairs"]
    return summary


def run_rmsp(cfg: ConfigDict, out: Path) -> dict:
    """Self-play dialogues selected by the RM (best of N) and, for the ablation, at random (N=1)."""
    from almost_jax.jobs import rmsp
    summary = {}
    for name, selection, n in (("rm", "rm", int(cfg.rmsp.n_candidates)), ("random", "random", 1)):
        result = rmsp.run(rmsp_job(cfg, out / name, selection, n))
        summary.update({f"{name}_{k}": v for k, v in result.items()})
    return summary


def run_sft(cfg: ConfigDict, out: Path) -> dict:
    """SFT of the smallest model on RM-selected and on randomly selected dialogues; oracle scores
    against the same model prompted with demonstrations."""
    from almost_jax.jobs import sft
    root = Path(cfg.workdir)
    member = cfg.sft_member
    preset = cfg.family[member].preset
    summary = {}
    base = policy_scores(cfg, family_params(root, member), preset, cfg.policy_eval.baseline_template,
                         int(cfg.policy_eval.baseline_shots))
    summary["prompted_baseline_score"] = base["score"]
    for name in ("rm", "random"):
        result = sft.run(sft_job(cfg, out, name))
        scores = policy_scores(cfg, out / name / "params", preset)
        summary[f"sft_{name}_score"] = scores["score"]
        summary[f"sft_{name}_exact"] = scores["exact"]
        summary[f"sft_{name}_eval_loss"] = result["eval_loss"]
    return summary


def run_ppo(cfg: ConfigDict, out: Path) -> dict:
    """PPO from the RM-guided SFT policy against the RM; the oracle's score of each rollout batch
    is logged beside the RM reward (evaluation only), then the final policy is scored."""
    from almost_jax.jobs import ppo
    result = ppo.run(ppo_job(cfg, out))
    preset = cfg.family[cfg.sft_member].preset
    scores = policy_scores(cfg, out / "params", preset)
    result.update({"policy_score": scores["score"], "policy_exact": scores["exact"]})
    return result


STAGES = [
    Stage("world", ("world",), run_world),
    Stage("pretrain", ("family", "pretrain"), run_pretrain),
    Stage("family_eval", ("family_eval",), run_family_eval),
    Stage("queries", ("queries",), run_queries),
    Stage("comparisons", ("comparisons", "sampling_batch_size"), run_comparisons),
    Stage("reward", ("reward", "reward_init_member", "reward_ablation_nofilter"), run_reward),
    Stage("rmsp", ("rmsp",), run_rmsp),
    Stage("sft", ("sft", "sft_member", "policy_eval"), run_sft),
    Stage("ppo", ("ppo", "ppo_optimizer"), run_ppo),
    # Optional method stages, each from the sft stage's RM-guided policy; every one reports its
    # policies to the report stage (method_stages.py).
    Stage("best_of_n", ("best_of_n",), run_best_of_n, optional=True),
    Stage("expert_iteration", ("expert_iteration",), run_expert_iteration, optional=True),
    Stage("rloo", ("ppo", "ppo_optimizer", "rloo"), functools.partial(run_rl_method, "rloo"), optional=True),
    Stage("grpo", ("ppo", "ppo_optimizer", "grpo"), functools.partial(run_rl_method, "grpo"), optional=True),
    *[Stage(name, keys, fn, optional=True) for name, keys, fn in preference_runners()],
    Stage("report", ("policy_eval",), run_report),
]
