"""The pipeline's stages: thin adapters from the pipeline config to each job's own function."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Stage:
    name: str
    config_keys: tuple[str, ...]  # top-level config blocks this stage reads
    run: Callable[[ConfigDict, Path], dict]  # (config, workdir) -> summary dict


def world_paths(workdir_root: Path) -> dict[str, Path]:
    w = workdir_root / "world"
    return {"corpus": w / "corpus.jsonl", "tokenizer": w / "tokenizer.model", "eval_tasks": w / "eval_tasks.jsonl",
            "seed_queries": w / "seed_queries.jsonl"}


def family_params(workdir_root: Path, member: str) -> Path:
    return workdir_root / "pretrain" / member / "params"


def run_world(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.miniworld.build import build_world
    return build_world(cfg.world, out)


def member_config(cfg: ConfigDict, member: str, out: Path) -> ConfigDict:
    """The pretrain job config of one family member: the shared `pretrain` block + its overrides."""
    spec = cfg.family[member]
    job = copy.deepcopy(cfg.pretrain)
    with job.unlocked():
        job.name = f"pretrain-{member}"
        job.workdir = str(out / member)
        job.model.preset = spec.preset
        job.train.steps = int(spec.steps)
        paths = world_paths(Path(cfg.workdir))
        job.data.corpus, job.data.tokenizer = str(paths["corpus"]), str(paths["tokenizer"])
    return job


def run_pretrain(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.jobs import pretrain
    from almost_jax.jobs.common import read_manifest
    summary = {}
    for member in ("S", "M", "L"):
        job = member_config(cfg, member, out)
        pretrain.run(job)
        summary[f"{member}_loss"] = (read_manifest(Path(job.workdir) / "manifest.json") or {}).get("final_loss")
    return summary


def generator_setup(cfg: ConfigDict, member: str, sampling: ConfigDict, template: str = "", n_shots: int = 0) -> ConfigDict:
    """A sampler setup (model + weights + tokenizer + prompt + sampling) for a family member."""
    root = Path(cfg.workdir)
    return ConfigDict(dict(
        model=ConfigDict(dict(preset=cfg.family[member].preset, hf_path="", dtype="float32", param_dtype="float32",
                              remat=False, attention_impl="xla")),
        params=str(family_params(root, member)), tokenizer=str(world_paths(root)["tokenizer"]),
        batch_size=int(cfg.sampling_batch_size), bucket=64, template=template, n_shots=n_shots,
        sampling=copy.deepcopy(sampling)))


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


def queries_job(cfg: ConfigDict, out: Path, name: str) -> ConfigDict:
    """The queries job config of one query set (twice the wanted count, before de-duplication)."""
    from almost_jax.jobs import queries
    index = list(cfg.queries.sets.keys()).index(name)
    job = queries.queries_config("miniworld")
    with job.unlocked():
        job.update(dict(output=str(out / f"{name}.jsonl"), num_queries=int(cfg.queries.sets[name]) * 2,
                        seed=int(cfg.queries.seed) + index, families=list(cfg.world.families), id_prefix=f"{name}-"))
    return job


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


def comparison_setups(cfg: ConfigDict) -> ConfigDict:
    setups = ConfigDict()
    for name, spec in cfg.comparisons.setups.items():
        setups[name] = generator_setup(cfg, spec.member, cfg.comparisons.sampling, spec.template, int(spec.n_shots))
    return setups


def comparisons_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    c = cfg.comparisons
    return ConfigDict(dict(workdir=str(out), queries=str(Path(cfg.workdir) / "queries" / "rm.jsonl"), max_queries=0,
                           on_error="raise", seed=int(c.seed), rubric=tuple(c.rubric), setups=comparison_setups(cfg),
                           rules=copy.deepcopy(c.rules)))


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


def reward_job(cfg: ConfigDict, out: Path, train_file: Path) -> ConfigDict:
    job = copy.deepcopy(cfg.reward)
    root = Path(cfg.workdir)
    with job.unlocked():
        job.workdir = str(out)
        job.init_from = str(family_params(root, cfg.reward_init_member))
        job.model.preset = cfg.family[cfg.reward_init_member].preset
        job.data.train = str(train_file)
        job.data.tokenizer = str(world_paths(root)["tokenizer"])
    return job


def run_reward(cfg: ConfigDict, out: Path) -> dict:
    """RM on filtered synthetic pairs, and (ablation) without the length filter; both measured on
    the oracle-labelled held-out pairs."""
    from almost_jax.checkpoints.load import load_model_params
    from almost_jax.config_lib import llama_config
    from almost_jax.data.tokenizer import load_tokenizer
    from almost_jax.evaluation.rm_accuracy import evaluate_file
    from almost_jax.jobs import train_rm
    from almost_jax.learners.reward import RewardScorer
    from almost_jax.models.llama import ScalarHeadModel
    comp = Path(cfg.workdir) / "comparisons"
    summary = {}
    variants = [("rm", comp / "comparisons.jsonl")]
    if cfg.reward_ablation_nofilter:
        variants.append(("rm_nofilter", comp / "comparisons_nofilter.jsonl"))
    for name, train_file in variants:
        job = reward_job(cfg, out / name, train_file)
        result = train_rm.run(job)
        model_cfg = llama_config(job.model)
        params = load_model_params(out / name / "params", model_cfg)
        scorer = RewardScorer(ScalarHeadModel(model_cfg), params, load_tokenizer(job.data.tokenizer),
                              int(job.train.seq_len), int(job.eval_batch_size), job.data.input_template)
        gold = evaluate_file(scorer, comp / "gold_pairs.jsonl", "comparisons")
        summary[f"{name}_heldout_synthetic_accuracy"] = result["heldout_accuracy"]
        summary[f"{name}_oracle_agreement"] = gold["accuracy"]
        summary[f"{name}_train_pairs"] = result["train_pairs"]
    return summary


def policy_scores(cfg: ConfigDict, params_path: Path, preset: str, template: str = "", n_shots: int = 0) -> dict:
    """Oracle scores of a policy on the held-out tasks under cfg.policy_eval's sampling."""
    return policy_replies(cfg, params_path, preset, template, n_shots)[0]


def rmsp_job(cfg: ConfigDict, out: Path, selection: str, n_candidates: int) -> ConfigDict:
    from almost_jax.jobs.rmsp import rmsp_config
    root = Path(cfg.workdir)
    r = cfg.rmsp
    job = rmsp_config()
    with job.unlocked():
        job.workdir, job.queries, job.seed, job.chunk_size = str(out), str(root / "queries" / "rmsp.jsonl"), int(r.seed), int(r.chunk_size)
        job.selfplay.update(dict(n_candidates=n_candidates, max_assistant_turns=int(r.max_assistant_turns),
                                 selection=selection, end_markers=list(r.end_markers)))
        job.assistant = generator_setup(cfg, r.assistant_member, r.assistant_sampling, r.assistant_template, int(r.assistant_shots))
        job.user = generator_setup(cfg, r.user_member, r.user_sampling, r.user_template, int(r.user_shots))
        job.rm.model.update(dict(preset=cfg.family[cfg.reward_init_member].preset, dtype="float32", param_dtype="float32"))
        job.rm.update(dict(params=str(root / "reward" / "rm" / "params"), tokenizer=str(world_paths(root)["tokenizer"]),
                           max_len=int(cfg.reward.train.seq_len), batch_size=int(cfg.sampling_batch_size)))
    return job


def run_rmsp(cfg: ConfigDict, out: Path) -> dict:
    """Self-play dialogues selected by the RM (best of N) and, for the ablation, at random (N=1)."""
    from almost_jax.jobs import rmsp
    summary = {}
    for name, selection, n in (("rm", "rm", int(cfg.rmsp.n_candidates)), ("random", "random", 1)):
        result = rmsp.run(rmsp_job(cfg, out / name, selection, n))
        summary.update({f"{name}_{k}": v for k, v in result.items()})
    return summary


def sft_job(cfg: ConfigDict, out: Path, selection: str) -> ConfigDict:
    """SFT of the smallest member on the dialogues of one self-play selection ("rm" or "random")."""
    root = Path(cfg.workdir)
    job = copy.deepcopy(cfg.sft)
    with job.unlocked():
        job.workdir = str(out / selection)
        job.init_from = str(family_params(root, cfg.sft_member))
        job.model.preset = cfg.family[cfg.sft_member].preset
        job.data.train = str(root / "rmsp" / selection / "dialogues.jsonl")
        job.data.tokenizer = str(world_paths(root)["tokenizer"])
    return job


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


def ppo_job(cfg: ConfigDict, out: Path) -> ConfigDict:
    from almost_jax.jobs import ppo
    root = Path(cfg.workdir)
    job = ppo.ppo_config()
    preset, rm_preset = cfg.family[cfg.sft_member].preset, cfg.family[cfg.reward_init_member].preset
    with job.unlocked():
        job.update(dict(workdir=str(out), prompts=str(root / "queries" / "rl.jsonl"),
                        tokenizer=str(world_paths(root)["tokenizer"]), policy_init=str(root / "sft" / "rm" / "params"),
                        rm_params=str(root / "reward" / "rm" / "params"), rm_stats=str(root / "reward" / "rm" / "reward_stats.json"),
                        rm_max_len=int(cfg.reward.train.seq_len), gold="miniworld"))
        job.policy_model.preset, job.rm_model.preset = preset, rm_preset
        job.ppo.update(cfg.ppo.to_dict())
        job.optimizer.update(cfg.ppo_optimizer.to_dict())
    return job


def run_ppo(cfg: ConfigDict, out: Path) -> dict:
    """PPO from the RM-guided SFT policy against the RM; the oracle's score of each rollout batch
    is logged beside the RM reward (evaluation only), then the final policy is scored."""
    from almost_jax.jobs import ppo
    result = ppo.run(ppo_job(cfg, out))
    preset = cfg.family[cfg.sft_member].preset
    scores = policy_scores(cfg, out / "params", preset)
    result.update({"policy_score": scores["score"], "policy_exact": scores["exact"]})
    return result


def policy_replies(cfg: ConfigDict, params_path: Path, preset: str, template: str = "", n_shots: int = 0):
    """(oracle scores, replies) of a policy on the held-out tasks."""
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.data.templates import load_prompt_file, prompt_path
    from almost_jax.evaluation.oracle_eval import evaluate_policy
    from almost_jax.synthetic.generation import build_sampler
    root = Path(cfg.workdir)
    setup = ConfigDict(dict(model=ConfigDict(dict(preset=preset, hf_path="", dtype="float32", param_dtype="float32",
                                                  remat=False, attention_impl="xla")),
                            params=str(params_path), tokenizer=str(world_paths(root)["tokenizer"]),
                            batch_size=int(cfg.sampling_batch_size), bucket=64))
    sampler = build_sampler(setup, cfg.policy_eval.sampling)
    generate = lambda ps: [c.text for c in sampler.generate(ps, seed=int(cfg.policy_eval.seed), progress=False)]  # noqa: E731
    tasks = load_jsonl(world_paths(root)["eval_tasks"], PromptRecord)
    tmpl = load_prompt_file(prompt_path(template)) if template else None
    return evaluate_policy(generate, tasks, tmpl, n_shots)


def run_report(cfg: ConfigDict, out: Path) -> dict:
    """report.md, summary.json and plots from every stage's outputs."""
    from almost_jax.checkpoints.load import load_model_params
    from almost_jax.config_lib import llama_config
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.data.tokenizer import load_tokenizer
    from almost_jax.evaluation.report import write_report
    from almost_jax.evaluation.winrate import oracle_judge, rm_judge, win_rate
    from almost_jax.jobs import comparisons
    from almost_jax.jobs.common import read_manifest
    from almost_jax.learners.reward import RewardScorer
    from almost_jax.models.llama import ScalarHeadModel
    root = Path(cfg.workdir)
    tasks = load_jsonl(world_paths(root)["eval_tasks"], PromptRecord)
    queries = [t.prompt for t in tasks]
    rm_job = reward_job(cfg, root / "reward" / "rm", Path(""))
    rm_cfg = llama_config(rm_job.model)
    scorer = RewardScorer(ScalarHeadModel(rm_cfg), load_model_params(root / "reward" / "rm" / "params", rm_cfg),
                          load_tokenizer(world_paths(root)["tokenizer"]), int(cfg.reward.train.seq_len), 100)
    judges = {"oracle": oracle_judge(), "rm": rm_judge(scorer)}
    small = cfg.family[cfg.sft_member].preset
    policies = []
    heldout = root / "comparisons" / "heldout" / "responses"
    for name, spec in cfg.comparisons.setups.items():
        resp = comparisons.load_responses(heldout / f"{name}.jsonl", tasks)
        label = f"setup {name} ({spec.member}, {spec.template.split('.')[0]}, {spec.n_shots}-shot)"
        policies.append((f"setup_{name}", label, [resp[t.id]["response"] if t.id in resp else "" for t in tasks]))
    _, base = policy_replies(cfg, family_params(root, cfg.sft_member), small, cfg.policy_eval.baseline_template,
                             int(cfg.policy_eval.baseline_shots))
    policies.append(("prompted_baseline", f"{cfg.sft_member} prompted ({cfg.policy_eval.baseline_shots}-shot)", base))
    for key, label, path in (("sft_random", "SFT on random self-play (N=1)", root / "sft" / "random" / "params"),
                             ("sft_rm", f"SFT on RM best-of-{cfg.rmsp.n_candidates} self-play", root / "sft" / "rm" / "params"),
                             ("ppo", "PPO from SFT (RM)", root / "ppo" / "params")):
        if path.exists():
            policies.append((key, label, policy_replies(cfg, path, small)[1]))
    from almost_jax.miniworld import oracle
    rows = []
    for key, label, replies in policies:
        row = {"key": key, "name": label,
               "oracle_score": float(np.mean([oracle.score(q, r) for q, r in zip(queries, replies)])),
               "rm_score": float(np.mean(scorer.score([f"\n\nHuman: {q}" for q in queries], replies)))}
        for jname, judge in judges.items():
            row[f"winrate_{jname}"], row[f"winrate_{jname}_se"] = win_rate(judge, queries, replies, base)
        rows.append(row)
    rm = (read_manifest(root / "reward" / "manifest.json") or {}).get("summary", {})
    comp = (read_manifest(root / "comparisons" / "manifest.json") or {}).get("summary", {})
    bars = {"oracle agrees with\nsynthetic pairs (decisive)": comp.get("synthetic_oracle_agrees_decisive", float("nan")),
            "RM: held-out synthetic\npairs": rm.get("rm_heldout_synthetic_accuracy", float("nan")),
            "RM vs oracle\n(length filter)": rm.get("rm_oracle_agreement", float("nan")),
            "RM vs oracle\n(no filter)": rm.get("rm_nofilter_oracle_agreement", float("nan"))}
    sections = {"reward_model": rm, "comparisons": comp,
                "family": (read_manifest(root / "family_eval" / "manifest.json") or {}).get("summary", {}),
                "ppo": (read_manifest(root / "ppo" / "manifest.json") or {}).get("summary", {})}
    write_report(out, rows, sections, bars, root / "ppo" / "metrics.jsonl")
    from almost_jax.evaluation.report import markdown_table
    print(markdown_table(rows))
    return {r["key"]: round(r["oracle_score"], 4) for r in rows}


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
    Stage("report", ("policy_eval",), run_report),
]
