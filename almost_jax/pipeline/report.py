"""Scoring policies on the held-out tasks, and the report stage: every policy's oracle score, RM
score and win-rates against the prompted baseline, plus each stage's summary, in report.md,
summary.json and plots. Each enabled method stage (cfg.methods) adds the rows its summary lists
under "policies" (pipeline/method_stages.py, preference_stages.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from almost_jax.pipeline.job_configs import sampler_setup, world_paths


def policy_replies(cfg: ConfigDict, params_path: Path, preset: str, template: str = "", n_shots: int = 0):
    """(oracle scores, replies) of a policy on the held-out tasks under cfg.policy_eval's sampling."""
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.data.templates import load_prompt_file, prompt_path
    from almost_jax.evaluation.oracle_eval import evaluate_policy
    from almost_jax.synthetic.generation import build_sampler
    root = Path(cfg.workdir)
    sampler = build_sampler(sampler_setup(cfg, preset, params_path, cfg.policy_eval.sampling), cfg.policy_eval.sampling)
    generate = lambda ps, ids: [c.text for c in sampler.generate(  # noqa: E731  (keys by task id, as in family_eval)
        ps, seed=int(cfg.policy_eval.seed), progress=False, ids=ids, stream="policy_eval")]
    tasks = load_jsonl(world_paths(root)["eval_tasks"], PromptRecord)
    tmpl = load_prompt_file(prompt_path(template)) if template else None
    return evaluate_policy(generate, tasks, tmpl, n_shots)


def read_replies(path: Path) -> list[str]:
    return json.loads(Path(path).read_text())


def stage_times(root: Path) -> list[dict]:
    """Each finished stage's run time and finish time, from its manifest."""
    from almost_jax.jobs.common import read_manifest
    from almost_jax.pipeline.stages import STAGES
    out = []
    for st in STAGES:
        m = read_manifest(root / st.name / "manifest.json")
        if m:
            out.append({"stage": st.name, "seconds": float(m.get("seconds", float("nan"))),
                        "finished_at": m.get("finished_at", "")})
    return out


def skipped_by_stage(root: Path) -> dict[str, int]:
    """{"<stage>: <file>": records skipped} from every stage manifest (see data.errors)."""
    from almost_jax.jobs.common import read_manifest
    return {f"{m.parent.name}: {path}": n for m in sorted(root.glob("*/manifest.json"))
            for path, n in ((read_manifest(m) or {}).get("skipped_records") or {}).items()}


def method_policies(cfg: ConfigDict, tasks) -> tuple[list[tuple[str, str, list[str]]], dict]:
    """(key, label, replies on the held-out tasks) of every policy the enabled method stages list,
    and each stage's summary without its policies (a report section). An entry's `replies` file is
    a list in task order or {task id: reply}; an entry with only `params` is decoded here."""
    from almost_jax.jobs.common import read_manifest
    root = Path(cfg.workdir)
    small = cfg.family[cfg.sft_member].preset
    rows, sections = [], {}
    for stage in cfg.get("methods", ()):
        summary = dict((read_manifest(root / stage / "manifest.json") or {}).get("summary", {}))
        for key, entry in summary.pop("policies", {}).items():
            if "replies" in entry:
                stored = json.loads(Path(entry["replies"]).read_text())
                replies = [stored.get(t.id, "") for t in tasks] if isinstance(stored, dict) else list(stored)
            elif "params" in entry:
                replies = policy_replies(cfg, Path(entry["params"]), small)[1]
            else:
                raise ValueError(f"{root / stage / 'manifest.json'}: policy {key!r} has neither params nor replies")
            rows.append((key, entry["label"], replies))
        sections[stage] = summary
    return rows, sections


def run_report(cfg: ConfigDict, out: Path) -> dict:
    """report.md, summary.json and plots from every stage's outputs. The stages keep each policy's
    held-out replies, so nothing is sampled again here: the oracle and the chosen RM score them."""
    from almost_jax.data import chat
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.evaluation.claims import claim, paired_difference
    from almost_jax.evaluation.oracle_eval import mean_ci
    from almost_jax.evaluation.report import write_report
    from almost_jax.jobs import comparisons
    from almost_jax.jobs.common import read_manifest
    from almost_jax.learners.reward import load_reward_model
    from almost_jax.miniworld import oracle
    root = Path(cfg.workdir)
    tasks = load_jsonl(world_paths(root)["eval_tasks"], PromptRecord)
    queries, fams = [t.prompt for t in tasks], np.asarray([t.meta["family"] for t in tasks])
    families = sorted(set(fams))
    seeds = [int(s) for s in cfg.seeds]
    manifest = lambda stage: (read_manifest(root / stage / "manifest.json") or {}).get("summary", {})  # noqa: E731
    rm_summary, rmsp_summary, ppo_summary = manifest("reward"), manifest("rmsp"), manifest("ppo")

    policies = {}  # key -> (label, replies of each seed)
    heldout = root / "comparisons" / "heldout" / "responses"
    for name, spec in cfg.comparisons.setups.items():
        resp = comparisons.load_responses(heldout / f"{name}.jsonl", tasks)
        policies[f"setup_{name}"] = (f"setup {name} ({spec.member}, {spec.template.split('.')[0]}, {spec.n_shots}-shot)",
                                     [[resp[t.id]["response"] if t.id in resp else "" for t in tasks]])
    policies["prompted_baseline"] = (f"{cfg.sft_member} prompted ({cfg.policy_eval.baseline_shots}-shot)",
                                     [read_replies(root / "sft" / "baseline_replies.json")])
    sft_dir, ppo_dir = (lambda s, n: root / "sft" / f"seed_{s}" / n), (lambda s: root / "ppo" / f"seed_{s}")  # noqa: E731
    policies["sft_random"] = ("SFT on random self-play (N=1)", [read_replies(sft_dir(s, "random") / "heldout_replies.json") for s in seeds])
    policies["sft_rm"] = (f"SFT on RM best-of-{cfg.rmsp.n_candidates} self-play",
                          [read_replies(sft_dir(s, "rm") / "heldout_replies.json") for s in seeds])
    policies["ppo"] = (f"PPO from SFT (RM), step chosen by kl_budget={cfg.ppo.kl_budget}",
                       [read_replies(ppo_dir(s) / "selected_replies.json") for s in seeds])
    policies["ppo_final"] = (f"PPO, final step {cfg.ppo.steps} (not chosen; for reference)",
                             [read_replies(ppo_dir(s) / "final_replies.json") for s in seeds])
    methods, method_sections = method_policies(cfg, tasks)
    for key, label, replies in methods:
        policies[key] = (label, [replies])

    scorer = load_reward_model(root / "reward" / "rm", batch_size=100)
    prompts = [chat.format_turn(chat.HUMAN, q) for q in queries]
    gold = {k: np.array([[oracle.score(q, r) for q, r in zip(queries, reps)] for reps in runs]) for k, (_, runs) in policies.items()}
    rm = {k: np.array([scorer.raw_scores(prompts, reps) for reps in runs]) for k, (_, runs) in policies.items()}
    win = lambda a, b: ((a > b) + 0.5 * (a == b)).mean(0)  # noqa: E731  per task, seed-averaged
    rows = []
    for key, (label, runs) in policies.items():
        g = gold[key]
        row = {"key": key, "name": label, "seeds": len(runs), "oracle_score": float(g.mean()),
               "oracle_score_ci": mean_ci(g.mean(0))[1], "rm_score": float(rm[key].mean())}
        for fam in families:
            row[f"score_{fam}"], row[f"score_{fam}_ci"] = mean_ci(g[:, fams == fam].mean(0))
        for jname, scores in (("oracle", gold), ("rm", rm)):
            row[f"winrate_{jname}"], row[f"winrate_{jname}_ci"] = mean_ci(win(scores[key], scores["prompted_baseline"]))
        rows.append(row)

    def compare(text, a, b, note=""):
        d = paired_difference(gold[a], gold[b], fams)
        return claim(text, d["mean"], d["ci"], 0.0, d["per_seed"] if len(d["per_seed"]) > 1 else (), note), d

    claims, differences = [], {}
    for text, key, threshold in (("RM agrees with the oracle on held-out gold pairs >= 0.80", "rm_oracle_agreement", 0.8),
                                 ("RM agrees with the oracle within a self-play turn >= 0.65", "within_turn_agreement", 0.65)):
        src = rm_summary if key in rm_summary else rmsp_summary
        claims.append(claim(text, src[key], src[f"{key}_ci"], threshold))
    claims.append(claim(f"RM best-of-{cfg.rmsp.n_candidates} pick > random pick (oracle score within a turn)",
                        rmsp_summary["pick_minus_random"], rmsp_summary["pick_minus_random_ci"], 0.0))
    best = max(("sft_rm", "sft_random"), key=lambda k: gold[k].mean())
    for key, text, a, b, note in (
            ("sft_rm-sft_random", "SFT on RM self-play > SFT on random self-play", "sft_rm", "sft_random", ""),
            (f"{best}-prompted_baseline", "best SFT arm >= prompted baseline", best, "prompted_baseline",
             f"best arm: {best}, by oracle mean: a statement about the pair, not a selection used anywhere"),
            ("ppo-sft_rm", "PPO (kl_budget step) > its SFT start", "ppo", "sft_rm", ""),
            ("ppo_final-sft_rm", "PPO final step > its SFT start (reference)", "ppo_final", "sft_rm", ""),
            ("setup_A-setup_B", "setup A > setup B", "setup_A", "setup_B", "one sample each"),
            ("setup_B-setup_C", "setup B > setup C", "setup_B", "setup_C", "one sample each"),
            ("setup_C-setup_D", "setup C > setup D", "setup_C", "setup_D", "one sample each")):
        c, differences[key] = compare(text, a, b, note)
        claims.append(c)
    for key, label, _ in methods:  # each method against the policy it starts from: the first seed's SFT (RM)
        d = differences[f"{key}-sft_rm"] = paired_difference(gold[key], gold["sft_rm"][:1], fams)
        claims.append(claim(f"{label} > its SFT start (seed {seeds[0]})", d["mean"], d["ci"], 0.0,
                            note="one run of the method"))
    if "filter_minus_nofilter_oracle_agreement" in rm_summary:  # both RMs trained (reward_length_filter=auto)
        lf = rm_summary["filter_minus_nofilter_oracle_agreement"]
        claims.append(claim("length filter raises RM-oracle agreement (ablation; filter - no filter)", lf[0], lf[1:], 0.0,
                            note=f"RM used: {rm_summary['chosen']}, chosen by synthetic held-out accuracy "
                                 f"{rm_summary['filter_synthetic_heldout_accuracy']:.3f} (filter) vs "
                                 f"{rm_summary['nofilter_synthetic_heldout_accuracy']:.3f} (no filter)"))
    rm_choice = ("the RM variant by its accuracy on held-out *synthetic* pairs (reward_length_filter=auto)"
                 if cfg.reward_length_filter == "auto" else
                 f"the RM variant fixed in the config (reward_length_filter={cfg.reward_length_filter}; its comment "
                 "gives the synthetic held-out accuracies it was set from)")
    notes = [f"How each setting was chosen: {rm_choice}; the PPO policy by `ppo.kl_budget` (the last kept "
             "step whose own rollouts stayed within the budget); every other value is set in the config before "
             "the run. The oracle only evaluates."]
    title = "almost_jax mini-world report"
    if cfg.reward_labels == "oracle":
        title = "CONTROL (not ALMoST): the RM trained on oracle-labelled pairs - almost_jax mini-world report"
        notes.insert(0, "**CONTROL**: the oracle labelled this run's RM training pairs; an upper bound on the "
                        "machinery, not a result of synthetic feedback.")
    bars = {"oracle agrees with\nsynthetic pairs (decisive)": manifest("comparisons").get("synthetic_oracle_agrees_decisive", float("nan")),
            "RM vs oracle\n(length filter)": rm_summary.get("filter_oracle_agreement", float("nan")),
            "RM vs oracle\n(no filter)": rm_summary.get("nofilter_oracle_agreement", float("nan")),
            "RM vs oracle\nwithin a turn": rmsp_summary.get("within_turn_agreement", float("nan"))}
    sections = {"reward_model": rm_summary, "rmsp": rmsp_summary, "family": manifest("family_eval"),
                "comparisons": manifest("comparisons"), "ppo": ppo_summary, "paired_differences": differences,
                **method_sections}
    skipped = skipped_by_stage(root)
    if skipped:
        sections["skipped input records (on_error=skip)"] = skipped
    write_report(out, title, rows, families, claims, sections, bars, ppo_dir(seeds[0]) / "metrics.jsonl",
                 stage_times(root), notes)
    summary = {r["key"]: round(r["oracle_score"], 4) for r in rows}
    summary.update({c["claim"]: c["verdict"] for c in claims})
    return summary
