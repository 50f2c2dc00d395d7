"""The pipeline's report: tables, plots, and summary.json with stable keys.

Rows: each sampler setup, the smallest model prompted with demonstrations (the baseline), SFT on
RM-selected and on randomly selected self-play, PPO, and the policies of every enabled method stage
(best-of-n, expert iteration, RLOO, GRPO, DPO, SPA, CUT). Columns: gold-oracle score (mean over
seeds, ± the 95% CI half-width over tasks), mean RM score, win-rate vs the baseline judged by the
oracle and by the RM (ties half). Then the per-family oracle scores, the claims (paired
differences with 95% CIs and their verdicts, evaluation/claims.py) and each stage's run time.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from almost_jax.data.schemas import atomic_open, write_json_atomic


def markdown_table(rows: list[dict]) -> str:
    head = ("| policy | seeds | oracle score | RM score | win-rate vs baseline (oracle) | win-rate vs baseline (RM) |\n"
            "|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['name']} | {r['seeds']} | {r['oracle_score']:.3f} ± {r['oracle_score_ci']:.3f} | {r['rm_score']:.3f} "
        f"| {r['winrate_oracle']:.3f} ± {r['winrate_oracle_ci']:.3f} | {r['winrate_rm']:.3f} ± {r['winrate_rm_ci']:.3f} |\n"
        for r in rows)
    return head + body


def family_table(rows: list[dict], families: list[str]) -> str:
    head = "| policy | " + " | ".join(families) + " |\n|---|" + "---|" * len(families) + "\n"
    body = "".join(f"| {r['name']} | " + " | ".join(f"{r[f'score_{f}']:.3f} ± {r[f'score_{f}_ci']:.3f}" for f in families)
                   + " |\n" for r in rows)
    return head + body


def claims_table(claims: list[dict]) -> str:
    head = "| claim | estimate | 95% CI | per seed | verdict |\n|---|---|---|---|---|\n"
    body = "".join(f"| {c['claim']} | {c['estimate']:+.3f} | [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | "
                   + (", ".join(f"{x:+.3f}" for x in c["per_seed"]) or "-") + f" | {c['verdict']}"
                   + (f" ({c['note']})" if c["note"] else "") + " |\n" for c in claims)
    return head + body


def stage_table(stage_times: list[dict]) -> str:
    head = "| stage | seconds | finished at |\n|---|---|---|\n"
    when = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t))) if t else ""  # noqa: E731
    body = "".join(f"| {t['stage']} | {t['seconds']:.0f} | {when(t['finished_at'])} |\n" for t in stage_times)
    total = sum(t["seconds"] for t in stage_times)
    return head + body + f"| all | {total:.0f} ({total / 60:.1f} min) | |\n"


def plot_ppo(metrics_path: Path, out_png: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from almost_jax.train.metrics import read_metrics
    rows = [r for r in read_metrics(metrics_path) if "rl/reward" in r] if metrics_path.exists() else []
    if not rows:
        return False
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [r["rl/reward"] for r in rows], label="RM reward (raw)")
    axes[0].set_title("RM reward")
    axes[1].plot(steps, [r["rl/kl"] for r in rows], color="tab:red")
    axes[1].set_title("KL to reference (nats per reply)")
    if "rl/gold_score" in rows[0]:
        axes[2].plot(steps, [r["rl/gold_score"] for r in rows], color="tab:green")
    axes[2].set_title("gold oracle score of rollouts")
    for ax in axes:
        ax.set_xlabel("PPO step")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def plot_rm(bars: dict[str, float], out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(bars)
    ax.bar(range(len(names)), [bars[n] for n in names], color=["tab:gray", "tab:blue", "tab:orange", "tab:purple"][:len(names)])
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right", fontsize=8)
    ax.axhline(0.5, color="k", lw=0.5, ls="--")
    ax.set_ylim(0, 1)
    ax.set_title("Reward model vs the gold oracle")
    for i, n in enumerate(names):
        ax.text(i, bars[n] + 0.02, f"{bars[n]:.2f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def write_report(out: Path, title: str, rows: list[dict], families: list[str], claims: list[dict], sections: dict,
                 rm_bars: dict, ppo_metrics: Path, stage_times: list[dict], notes: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    plot_rm(rm_bars, out / "rm_vs_oracle.png")
    has_ppo = plot_ppo(ppo_metrics, out / "ppo_curves.png")
    summary = {"policies": {r["key"]: {k: v for k, v in r.items() if k not in ("key", "name")} for r in rows},
               "title": title, "claims": claims, "stage_times": stage_times, **sections}
    write_json_atomic(out / "summary.json", summary)
    lines = [f"# {title}", "", markdown_table(rows), "",
             "Baseline: the smallest vanilla model prompted with demonstrations. Oracle scores on the held-out "
             "tasks, greedy; ± is the 95% CI half-width over tasks (seed-averaged per task).", "",
             "## Oracle score per family", "", family_table(rows, families), "",
             "## Claims (paired differences on the same tasks, 95% CIs)", "", claims_table(claims), "",
             *notes, "", "## Stage times (from the manifests)", "", stage_table(stage_times), ""]
    for title, section in sections.items():
        lines += [f"## {title}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in section.items()]
        lines.append("")
    lines += ["![RM vs oracle](rm_vs_oracle.png)", ""]
    if has_ppo:
        lines += ["![PPO curves](ppo_curves.png)", ""]
    with atomic_open(out / "report.md") as f:
        f.write("\n".join(lines))
    return summary


def nan_to_none(x):
    return None if isinstance(x, float) and np.isnan(x) else x
