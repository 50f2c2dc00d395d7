"""Scoring policies on the held-out tasks, and the report stage: every policy's oracle score, RM
score and win-rates against the prompted baseline, plus each stage's summary, in report.md,
summary.json and plots. Each enabled method stage (cfg.methods) adds the rows its summary lists
under "policies" (method_stages.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from almost_jax.pipeline.job_configs import family_params, sampler_setup, world_paths


def policy_replies(cfg: ConfigDict, params_path: Path, preset: str, template: str = "", n_shots: int = 0):
    """(oracle scores, replies) of a policy on the held-out tasks under cfg.policy_eval's sampling."""
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.data.templates import load_prompt_file, prompt_path
    from almost_jax.evaluation.oracle_eval import evaluate_policy
    from almost_jax.synthetic.generation import build_sampler
    root = Path(cfg.workdir)
    sampler = build_sampler(sampler_setup(cfg, preset, params_path, cfg.policy_eval.sampling), cfg.policy_eval.sampling)
    generate = lambda ps: [c.text for c in sampler.generate(ps, seed=int(cfg.policy_eval.seed), progress=False)]  # noqa: E731
    tasks = load_jsonl(world_paths(root)["eval_tasks"], PromptRecord)
    tmpl = load_prompt_file(prompt_path(template)) if template else None
    return evaluate_policy(generate, tasks, tmpl, n_shots)


def policy_scores(cfg: ConfigDict, params_path: Path, preset: str, template: str = "", n_shots: int = 0) -> dict:
    """Oracle scores of a policy on the held-out tasks."""
    return policy_replies(cfg, params_path, preset, template, n_shots)[0]


def method_policies(cfg: ConfigDict, tasks) -> tuple[list[tuple[str, str, list[str]]], dict]:
    """(key, label, replies on the held-out tasks) of every policy the enabled method stages list,
    and each stage's summary without its policies (a report section)."""
    import json
    from almost_jax.jobs.common import read_manifest
    root = Path(cfg.workdir)
    small = cfg.family[cfg.sft_member].preset
    rows, sections = [], {}
    for stage in cfg.get("methods", ()):
        summary = dict((read_manifest(root / stage / "manifest.json") or {}).get("summary", {}))
        for key, entry in summary.pop("policies", {}).items():
            if "params" in entry:
                replies = policy_replies(cfg, Path(entry["params"]), small)[1]
            elif "replies" in entry:
                by_id = json.loads(Path(entry["replies"]).read_text())
                replies = [by_id.get(t.id, "") for t in tasks]
            else:
                raise ValueError(f"{root / stage / 'manifest.json'}: policy {key!r} has neither params nor replies")
            rows.append((key, entry["label"], replies))
        sections[stage] = summary
    return rows, sections


def run_report(cfg: ConfigDict, out: Path) -> dict:
    """report.md, summary.json and plots from every stage's outputs."""
    from almost_jax.data import chat
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.evaluation.report import markdown_table, write_report
    from almost_jax.evaluation.winrate import oracle_judge, rm_judge, win_rate
    from almost_jax.jobs import comparisons
    from almost_jax.jobs.common import read_manifest
    from almost_jax.learners.reward import load_reward_model
    from almost_jax.miniworld import oracle
    root = Path(cfg.workdir)
    tasks = load_jsonl(world_paths(root)["eval_tasks"], PromptRecord)
    queries = [t.prompt for t in tasks]
    scorer = load_reward_model(root / "reward" / "rm", batch_size=100)
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
    methods, method_sections = method_policies(cfg, tasks)
    policies += methods
    contexts = [chat.format_turn(chat.HUMAN, q) for q in queries]  # what the judges and the RM read
    rows = []
    for key, label, replies in policies:
        row = {"key": key, "name": label,
               "oracle_score": float(np.mean([oracle.score(q, r) for q, r in zip(queries, replies)])),
               "rm_score": float(np.mean(scorer.raw_scores(contexts, replies)))}
        for jname, judge in judges.items():
            row[f"winrate_{jname}"], row[f"winrate_{jname}_se"] = win_rate(judge, contexts, replies, base)
        rows.append(row)
    rm = (read_manifest(root / "reward" / "manifest.json") or {}).get("summary", {})
    comp = (read_manifest(root / "comparisons" / "manifest.json") or {}).get("summary", {})
    bars = {"oracle agrees with\nsynthetic pairs (decisive)": comp.get("synthetic_oracle_agrees_decisive", float("nan")),
            "RM: held-out synthetic\npairs": rm.get("rm_heldout_synthetic_accuracy", float("nan")),
            "RM vs oracle\n(length filter)": rm.get("rm_oracle_agreement", float("nan")),
            "RM vs oracle\n(no filter)": rm.get("rm_nofilter_oracle_agreement", float("nan"))}
    sections = {"reward_model": rm, "comparisons": comp,
                "family": (read_manifest(root / "family_eval" / "manifest.json") or {}).get("summary", {}),
                "ppo": (read_manifest(root / "ppo" / "manifest.json") or {}).get("summary", {}), **method_sections}
    write_report(out, rows, sections, bars, root / "ppo" / "metrics.jsonl")
    print(markdown_table(rows))
    return {r["key"]: round(r["oracle_score"], 4) for r in rows}
