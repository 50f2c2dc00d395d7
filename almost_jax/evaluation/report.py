"""The pipeline's report: one table, plots, and summary.json with stable keys.

Rows: each sampler setup, the smallest model prompted with demonstrations (the baseline), SFT on
RM-selected and on randomly selected self-play, PPO, and the policies of every enabled method stage
(best-of-n, expert iteration, RLOO, GRPO, ...). Columns: gold-oracle score, mean RM
score, win-rate vs the baseline judged by the oracle and by the RM (with standard errors).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from almost_jax.data.schemas import atomic_open, write_json_atomic


def markdown_table(rows: list[dict]) -> str:
    head = "| policy | oracle score | RM score | win-rate vs baseline (oracle) | win-rate vs baseline (RM) |\n|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['name']} | {r['oracle_score']:.3f} | {r['rm_score']:.3f} | {r['winrate_oracle']:.3f} ± {r['winrate_oracle_se']:.3f} "
        f"| {r['winrate_rm']:.3f} ± {r['winrate_rm_se']:.3f} |\n" for r in rows)
    return head + body


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


def write_report(out: Path, rows: list[dict], sections: dict, rm_bars: dict, ppo_metrics: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    plot_rm(rm_bars, out / "rm_vs_oracle.png")
    has_ppo = plot_ppo(ppo_metrics, out / "ppo_curves.png")
    summary = {"policies": {r["key"]: {k: v for k, v in r.items() if k not in ("key", "name")} for r in rows},
               **sections}
    write_json_atomic(out / "summary.json", summary)
    lines = ["# almost_jax mini-world report", "", markdown_table(rows), "",
             "Baseline: the smallest vanilla model prompted with demonstrations. Win-rates count ties as half; "
             "± is the standard error over held-out tasks.", ""]
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
