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

import numpy as np
from almost_jax.pipeline.job_configs import (comparisons_job, family_params, generator_setup, member_config,
                                             ppo_job, queries_job, reward_job, rmsp_job, seed_dir, sft_job,
                                             world_paths)
from almost_jax.pipeline.method_stages import preference_runners, run_best_of_n, run_expert_iteration, run_rl_method
from almost_jax.pipeline.report import policy_replies, run_report


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


LADDER = ("S", "M", "L")  # the family, smallest first
LADDER_PAIRS = (("L", "M"), ("M", "S"))  # (bigger, smaller) neighbours the ALMoST prior orders


def run_family_eval(cfg: ConfigDict, out: Path) -> dict:
    """Oracle scores of each vanilla model on the held-out tasks, per family with 95% CIs, at each
    shot count, greedy and sampled; and the paired differences L-M and M-S on the same tasks (the
    ALMoST prior's premise: both > 0). Writes family_eval.json and family_eval.md."""
    from almost_jax.data.schemas import PromptRecord, atomic_open, load_jsonl, write_json_atomic
    from almost_jax.data.templates import load_prompt_file, prompt_path
    from almost_jax.evaluation.oracle_eval import evaluate_policy, task_scores
    from almost_jax.synthetic.generation import build_sampler
    ev = cfg.family_eval
    tasks = load_jsonl(world_paths(Path(cfg.workdir))["eval_tasks"], PromptRecord)
    instructions, families = [t.prompt for t in tasks], [t.meta["family"] for t in tasks]
    template = load_prompt_file(prompt_path(ev.template))
    modes = (("greedy", 0.0), ("sampled", float(ev.temperature)))
    table, per_task = {}, {}
    for member in LADDER:
        for mode, temperature in modes:
            sampling = copy.deepcopy(ev.sampling)
            sampling.temperature = temperature
            sampler = build_sampler(generator_setup(cfg, member, sampling), sampling)
            # Keys by task id, shared by the members (common random numbers: the size comparison
            # is not blurred by each model drawing other random numbers).
            generate = lambda ps, ids, s=sampler: [  # noqa: E731
                c.text for c in s.generate(ps, seed=int(ev.seed), progress=False, ids=ids, stream="family_eval")]
            for shots in ev.shots:
                res, replies = evaluate_policy(generate, tasks, template, int(shots))
                table[f"{member}_{mode}_{shots}shot"] = res
                per_task[(member, mode, shots)] = task_scores(instructions, replies)
    paired, not_above = ladder_differences(per_task, families)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "family_eval.json", {"scores": table, "paired": paired, "ladder_not_above_zero": not_above})
    with atomic_open(out / "family_eval.md") as f:
        f.write(family_table(table, paired, ev.shots, [m for m, _ in modes], sorted(set(families))))
    summary = {k: v["score"] for k, v in table.items()}
    summary["ladder_pairs_not_above_zero"] = len(not_above)
    return summary


def ladder_differences(per_task: dict, families) -> tuple[dict, list[str]]:
    """per_task: (member, mode, shots) -> oracle scores on the same tasks. Returns the paired
    differences of each LADDER_PAIRS neighbour pair at each (mode, shots), per family with 95% CIs,
    and the list of (pair, mode, shots, family) whose CI does not lie above zero."""
    from almost_jax.evaluation.oracle_eval import paired_difference
    paired, not_above = {}, []
    for mode, shots in sorted({(mode, shots) for _, mode, shots in per_task}):
        for big, small in LADDER_PAIRS:
            diff = paired_difference(per_task[(big, mode, shots)], per_task[(small, mode, shots)], families)
            paired[f"{big}-{small}_{mode}_{shots}shot"] = diff
            not_above += [f"{big}-{small} {mode} {shots}-shot {fam}" for fam, (m, ci) in diff.items()
                          if fam != "all" and m - ci <= 0]
    return paired, not_above


def family_table(table: dict, paired: dict, shots, modes, families) -> str:
    """Markdown: per family, mode and shot count, each member's mean oracle score and the paired
    differences L-M and M-S, each +- its 95% CI half-width."""
    pairs = [f"{big}-{small}" for big, small in LADDER_PAIRS]
    head = ("| family | mode | shots | " + " | ".join(LADDER + tuple(pairs)) + " |\n|"
            + "---|" * (3 + len(LADDER) + len(pairs)) + "\n")
    rows = []
    for fam in ["all"] + list(families):
        key = "score" if fam == "all" else f"score_{fam}"
        for mode in modes:
            for k in shots:
                cells = [f"{table[f'{m}_{mode}_{k}shot'][key]:.3f} ± {table[f'{m}_{mode}_{k}shot'][key + '_ci']:.3f}"
                         for m in LADDER]
                cells += ["{:+.3f} ± {:.3f}".format(*paired[f"{p}_{mode}_{k}shot"][fam]) for p in pairs]
                rows.append(f"| {fam} | {mode} | {k} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def run_queries(cfg: ConfigDict, out: Path) -> dict:
    """The query sets (RM comparisons, self-play, RL) in `queries.sets` order: disjoint by
    instruction, each holding every family's share (checked here)."""
    from collections import Counter
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.jobs import queries
    families = set(cfg.world.families)
    owner, summary = {}, {}
    for name, _ in cfg.queries.sets:
        job = queries_job(cfg, out, name)
        queries.run(job)
        recs = load_jsonl(job.output, PromptRecord)
        by_family = Counter(r.meta["family"] for r in recs)
        if set(by_family) != families:
            raise AssertionError(f"query set {name!r} misses families {sorted(families - set(by_family))}")
        shared = {r.prompt for r in recs if owner.setdefault(r.prompt, name) != name}
        if shared:
            raise AssertionError(f"query set {name!r} shares {len(shared)} instructions with an earlier set")
        summary[name] = len(recs)
        summary.update({f"{name}_{f}": n for f, n in sorted(by_family.items())})
        summary[f"{name}_distinct"] = len({r.prompt for r in recs})
    return summary


def run_comparisons(cfg: ConfigDict, out: Path) -> dict:
    """Synthetic comparisons on the RM queries, plus oracle-labelled pairs on held-out tasks."""
    from almost_jax.data.schemas import ComparisonRecord, PromptRecord, load_jsonl, write_json_atomic, write_jsonl_atomic
    from almost_jax.evaluation.oracle_pairs import agreement_breakdown, gold_pairs, mean_oracle_score, oracle_agreement
    from almost_jax.jobs import comparisons
    c = cfg.comparisons
    job = comparisons_job(cfg, out)
    summary = comparisons.run(job)
    synthetic = load_jsonl(out / "comparisons.jsonl", ComparisonRecord)
    summary.update({f"synthetic_{k}": v for k, v in oracle_agreement(synthetic).items() if k != "pairs"})
    # How true the ALMoST prior is on these pairs (evaluation only): per setup pair and family.
    breakdown = {name: agreement_breakdown(load_jsonl(out / f, ComparisonRecord))
                 for name, f in (("filter", "comparisons.jsonl"), ("nofilter", "comparisons_nofilter.jsonl"))}
    write_json_atomic(out / "prior_agreement.json", breakdown)
    summary.update({f"prior_{g}": v["agrees_decisive"] for g, v in breakdown["nofilter"].items() if "/" not in g})
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


# reward_length_filter -> the RM variants the reward stage trains (the later stages use one of them).
LENGTH_FILTER_VARIANTS = {"on": ("filter",), "off": ("nofilter",), "auto": ("filter", "nofilter")}


def run_reward(cfg: ConfigDict, out: Path) -> dict:
    """The RM on the synthetic pairs with ALMoST's length filter (`filter/`) and/or without it
    (`nofilter/`). `reward_length_filter` picks the one the later stages use (copied to `rm/`):
    "on" or "off" train that one only; "auto" trains both (the ablation) and keeps the more accurate
    on the held-out synthetic pairs of both files (one held-out query set: train_rm splits by
    prompt), a choice that never sees the oracle. Each RM is then measured against the oracle on
    held-out gold pairs (evaluation only): per pair type and family with bootstrap CIs, and with
    both, the paired difference filter - nofilter.

    `reward_labels="oracle"` is the CONTROL (configs/mini_control.py): the same pairs relabelled by
    the oracle, an upper bound on what the machinery does with a perfect labeller."""
    import shutil
    from almost_jax.data.schemas import ComparisonRecord, load_jsonl, write_json_atomic, write_jsonl_atomic
    from almost_jax.evaluation.oracle_pairs import cluster_ci, oracle_relabelled, rm_agreement
    from almost_jax.jobs import train_rm
    from almost_jax.learners.reward import load_reward_model
    comp = Path(cfg.workdir) / "comparisons"
    mode = LENGTH_FILTER_VARIANTS.get(cfg.reward_length_filter)
    if mode is None:
        raise ValueError(f"reward_length_filter must be auto, on or off, got {cfg.reward_length_filter!r}")
    if cfg.reward_labels not in ("synthetic", "oracle"):
        raise ValueError(f"reward_labels must be synthetic or oracle, got {cfg.reward_labels!r}")
    variants = {name: comp / f for name, f in (("filter", "comparisons.jsonl"), ("nofilter", "comparisons_nofilter.jsonl"))
                if name in mode}
    if cfg.reward_labels == "oracle":  # CONTROL only: the oracle labels the training pairs
        for name, f in list(variants.items()):
            variants[name] = out / f"oracle_labelled_{f.name}"
            write_jsonl_atomic(variants[name], oracle_relabelled(load_jsonl(f, ComparisonRecord)))
    heldout, seen = [], set()
    for train_file in variants.values():
        for r in train_rm.split_by_prompt(load_jsonl(train_file, ComparisonRecord), float(cfg.reward.data.eval_fraction))[1]:
            if (r.prompt, r.chosen, r.rejected) not in seen:
                seen.add((r.prompt, r.chosen, r.rejected))
                heldout.append(r)
    gold = load_jsonl(comp / "gold_pairs.jsonl", ComparisonRecord)
    summary = {"labels": cfg.reward_labels, "heldout_synthetic_pairs": len(heldout), "gold_pairs": len(gold)}
    hits, agreement = {}, {}
    for name, train_file in variants.items():
        job = reward_job(cfg, out / name, train_file)
        result = train_rm.run(job)
        scorer = load_reward_model(out / name, batch_size=int(job.eval_batch_size))
        summary[f"{name}_train_pairs"] = result["train_pairs"]
        summary[f"{name}_synthetic_heldout_accuracy"] = float(scorer.accuracy(
            [r.prompt for r in heldout], [r.chosen for r in heldout], [r.rejected for r in heldout])[0])
        prompts = [g.prompt for g in gold]
        chosen, rejected = scorer.raw_scores(prompts, [g.chosen for g in gold]), scorer.raw_scores(prompts, [g.rejected for g in gold])
        agreement[name] = rm_agreement(gold, chosen, rejected)
        hits[name] = np.where(chosen == rejected, 0.5, (chosen > rejected).astype(np.float64))
        summary[f"{name}_oracle_agreement"] = agreement[name]["all"]["mean"]
        summary[f"{name}_oracle_agreement_ci"] = agreement[name]["all"]["ci"]
    # ties go to ALMoST's default, the filter
    choice = max(variants, key=lambda n: (summary[f"{n}_synthetic_heldout_accuracy"], n == "filter"))
    shutil.rmtree(out / "rm", ignore_errors=True)
    shutil.copytree(out / choice, out / "rm")
    summary.update(chosen=choice, rm_oracle_agreement=summary[f"{choice}_oracle_agreement"],
                   rm_oracle_agreement_ci=summary[f"{choice}_oracle_agreement_ci"])
    if len(hits) == 2:
        mean, low, high = cluster_ci(hits["filter"] - hits["nofilter"], [g.meta.get("query_id", g.id) for g in gold])
        summary["filter_minus_nofilter_oracle_agreement"] = [mean, low, high]
    write_json_atomic(out / "rm_agreement.json", {"chosen": choice, "by_variant": agreement})
    return summary


def run_rmsp(cfg: ConfigDict, out: Path) -> dict:
    """Self-play dialogues selected by the RM (best of N) and, for the ablation, at random (N=1), for
    each of `seeds`; then the RM's choices within each best-of-N turn against the oracle's, pooled
    over seeds (evaluation only): pairwise agreement and the pick's score minus a random pick's."""
    from almost_jax.data.schemas import DialogueRecord, load_jsonl, write_json_atomic
    from almost_jax.evaluation.oracle_pairs import within_turn_agreement
    from almost_jax.jobs import rmsp
    summary, dialogues = {}, []
    for seed in cfg.seeds:
        for name, selection, n in (("rm", "rm", int(cfg.rmsp.n_candidates)), ("random", "random", 1)):
            result = rmsp.run(rmsp_job(cfg, out / f"seed_{seed}" / name, selection, n, int(seed)))
            summary.update({f"seed_{seed}_{name}_{k}": v for k, v in result.items()})
        dialogues += load_jsonl(out / f"seed_{seed}" / "rm" / "dialogues.jsonl", DialogueRecord)
    within = within_turn_agreement(dialogues)
    write_json_atomic(out / "within_turn.json", within)
    summary.update(within_turn_agreement=within["agreement"]["mean"], within_turn_agreement_ci=within["agreement"]["ci"],
                   pick_minus_random=within["pick_minus_random"]["mean"], pick_minus_random_ci=within["pick_minus_random"]["ci"],
                   pick_score=within["pick_score"], random_pick_score=within["random_pick_score"], turns=within["turns"])
    return summary


def save_replies(path: Path, replies: list[str]) -> None:
    from almost_jax.data.schemas import write_json_atomic
    write_json_atomic(path, replies)


def run_sft(cfg: ConfigDict, out: Path) -> dict:
    """SFT of the smallest model on RM-selected and on randomly selected dialogues of each seed; the
    oracle scores them on the held-out tasks (greedy), beside the same model prompted with
    demonstrations. Each policy's held-out replies are kept (`heldout_replies.json`) for the report."""
    from almost_jax.jobs import sft
    root = Path(cfg.workdir)
    member = cfg.sft_member
    preset = cfg.family[member].preset
    summary = {}
    base, replies = policy_replies(cfg, family_params(root, member), preset, cfg.policy_eval.baseline_template,
                                   int(cfg.policy_eval.baseline_shots))
    save_replies(out / "baseline_replies.json", replies)
    summary["prompted_baseline_score"] = base["score"]
    for seed in cfg.seeds:
        for name in ("rm", "random"):
            result = sft.run(sft_job(cfg, out / f"seed_{seed}", name, int(seed)))
            scores, replies = policy_replies(cfg, out / f"seed_{seed}" / name / "params", preset)
            save_replies(out / f"seed_{seed}" / name / "heldout_replies.json", replies)
            summary[f"seed_{seed}_sft_{name}_score"] = scores["score"]
            summary[f"seed_{seed}_sft_{name}_eval_loss"] = result["eval_loss"]
    for name in ("rm", "random"):
        summary[f"sft_{name}_score"] = float(np.mean([summary[f"seed_{s}_sft_{name}_score"] for s in cfg.seeds]))
    return summary


def run_ppo(cfg: ConfigDict, out: Path) -> dict:
    """PPO from each seed's RM-guided SFT policy against the RM. The policy the report scores is the
    one `ppo.kl_budget` selects (policies/selected.json: the last kept policy whose own rollouts stayed
    within the budget; no oracle involved), or the SFT start when none did. The oracle's score of
    each rollout batch is logged beside the reward (evaluation only); the final policy is scored too."""
    import json
    from almost_jax.jobs import rl
    root = Path(cfg.workdir)
    preset = cfg.family[cfg.sft_member].preset
    summary = {}
    for seed in cfg.seeds:
        d = out / f"seed_{seed}"
        result = rl.run(ppo_job(cfg, d, int(seed)))
        summary.update({f"seed_{seed}_{k}": v for k, v in result.items() if not isinstance(v, str)})
        selected = d / "policies" / "selected.json"
        chosen = Path(json.loads(selected.read_text())["params"]) if selected.exists() else seed_dir(root, "sft", seed) / "rm" / "params"
        for name, params in (("selected", chosen), ("final", d / "params")):
            scores, replies = policy_replies(cfg, params, preset)
            save_replies(d / f"{name}_replies.json", replies)
            summary[f"seed_{seed}_{name}_score"] = scores["score"]
    for name in ("selected", "final"):
        summary[f"{name}_score"] = float(np.mean([summary[f"seed_{s}_{name}_score"] for s in cfg.seeds]))
    return summary


STAGES = [
    Stage("world", ("world",), run_world),
    Stage("pretrain", ("family", "pretrain"), run_pretrain),
    Stage("family_eval", ("family_eval",), run_family_eval),
    Stage("queries", ("queries",), run_queries),
    Stage("comparisons", ("comparisons", "sampling_batch_size"), run_comparisons),
    Stage("reward", ("reward", "reward_init_member", "reward_length_filter", "reward_labels"), run_reward),
    Stage("rmsp", ("rmsp", "seeds"), run_rmsp),
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
