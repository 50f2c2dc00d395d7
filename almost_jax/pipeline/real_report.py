"""The real-text pipeline's report: what every stage took and produced, and sample outputs.

report.md and summary.json in the report dir: each stage's wall time and summary (from its
manifest), the RM's accuracies, and samples read from the stages' outputs (mined queries, a
chosen/rejected pair, a self-play dialogue) plus, freshly sampled here, the replies of the
original model, the SFT policy and the PPO policy to a few RL queries (one sampler, weights swapped).
No number here claims alignment quality: it is one small model and a few minutes of CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.data.schemas import write_json_atomic

STAGE_ORDER = ("convert", "queries", "comparisons", "reward", "rmsp", "sft", "ppo")


def stage_records(root: Path) -> dict[str, dict]:
    """stage -> its manifest's {seconds, summary} (stages not run yet are left out)."""
    from almost_jax.jobs.common import read_manifest
    out = {}
    for name in STAGE_ORDER:
        m = read_manifest(root / name / "manifest.json")
        if m and "seconds" in m:
            out[name] = {"seconds": float(m["seconds"]), "summary": m.get("summary", {})}
    return out


def samples(cfg: ConfigDict) -> dict:
    """Outputs of the stages, read back from their files."""
    from almost_jax.data.schemas import ComparisonRecord, DialogueRecord, PromptRecord, load_jsonl
    root = Path(cfg.workdir)
    n = int(cfg.report.n_samples)
    queries = [r.prompt for r in load_jsonl(root / "queries" / "all.jsonl", PromptRecord)][:n]
    pairs = load_jsonl(root / "comparisons" / "comparisons.jsonl", ComparisonRecord)
    pair = None
    if pairs:
        p = pairs[0]
        pair = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                "chosen_setup": p.provenance.chosen_setup, "rejected_setup": p.provenance.rejected_setup}
    dialogues = load_jsonl(root / "rmsp" / "dialogues.jsonl", DialogueRecord)
    longest = max(dialogues, key=lambda d: len(d.turns)) if dialogues else None
    dialogue = [{"speaker": t.speaker, "text": t.text,
                 **({"candidate_scores": [round(c.score, 3) for c in t.candidates]} if t.candidates else {})}
                for t in longest.turns] if longest else []
    return {"queries": queries, "pair": pair, "rmsp_dialogue": dialogue}


def policy_replies(cfg: ConfigDict) -> dict:
    """The replies of the original, SFT and PPO weights to the first `report.n_samples` RL queries,
    zero-shot in the chat format, with the RM's raw score of each."""
    from almost_jax.checkpoints.load import load_model_params
    from almost_jax.data import chat
    from almost_jax.data.schemas import PromptRecord, load_jsonl
    from almost_jax.learners.reward import load_reward_model
    from almost_jax.pipeline.real_stages import hf_dir, model_setup, query_file
    from almost_jax.synthetic.generation import build_sampler
    root = Path(cfg.workdir)
    queries = [r.prompt for r in load_jsonl(query_file(cfg, "rl"), PromptRecord)][: int(cfg.report.n_samples)]
    sampler = build_sampler(model_setup(cfg, cfg.report.sampling, len(queries)))
    scorer = load_reward_model(root / "reward" / "rm", batch_size=len(queries))
    prompts = [chat.prompt_for_reply([], q) for q in queries]
    out = {"queries": queries}
    for name, path in (("original", hf_dir(cfg)), ("sft", root / "sft" / "params"), ("ppo", root / "ppo" / "params")):
        if not Path(path).exists():
            continue
        params = load_model_params(str(path), sampler.model.cfg)
        replies = [chat.extract_reply(c.text) for c in
                   sampler.generate(prompts, seed=int(cfg.report.seed), progress=False, params=params)]
        scores = scorer.raw_scores([chat.format_turn(chat.HUMAN, q) for q in queries], replies)
        out[name] = [{"reply": r, "rm_score": round(float(s), 3)} for r, s in zip(replies, scores)]
    return out


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.strip().splitlines()) or "> (empty)"


def markdown(cfg: ConfigDict, stages: dict, shown: dict, replies: dict, load: tuple) -> str:
    total = sum(s["seconds"] for s in stages.values())
    lines = ["# almost_jax real-text report", "",
             f"Model: {cfg.model.name}, converted from `{stages.get('convert', {}).get('summary', {}).get('gguf', '?')}` "
             "(dequantized to float32). **Only one model size is available**: the comparison setups differ in "
             "prompt file and number of shots only, so the size factor of ALMoST's prior (larger model > smaller) "
             "is absent. No claim of alignment quality: the numbers show that every stage ran on real text.", "",
             f"Load average (1, 5, 15 min) when the report was written: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
             f"on {os.cpu_count()} CPUs.", "",
             "| stage | seconds | summary |", "|---|---|---|"]
    for name, s in stages.items():
        shown_summary = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["summary"].items()
                                  if not isinstance(v, (dict, list)))
        lines.append(f"| {name} | {s['seconds']:.0f} | {shown_summary} |")
    lines += [f"| **total (before report)** | {total:.0f} | |", "", "## Mined queries", ""]
    lines += [f"- {q}" for q in shown["queries"]]
    if shown["pair"]:
        p = shown["pair"]
        lines += ["", f"## A synthetic comparison (setup {p['chosen_setup']} > setup {p['rejected_setup']})", "",
                  "Query:", "", _quote(p["prompt"].replace("\n\nHuman: ", "", 1)), "", "Chosen:", "", _quote(p["chosen"]),
                  "", "Rejected:", "", _quote(p["rejected"])]
    if shown["rmsp_dialogue"]:
        lines += ["", "## An RM-guided self-play dialogue", ""]
        for t in shown["rmsp_dialogue"]:
            scores = f" (RM scores of the candidates: {t['candidate_scores']})" if "candidate_scores" in t else ""
            lines += [f"**{t['speaker']}**{scores}:", "", _quote(t["text"]), ""]
    if replies.get("queries"):
        lines += ["", "## Replies of the original, SFT and PPO weights (zero-shot chat prompt)", ""]
        for i, q in enumerate(replies["queries"]):
            lines += [f"Query: {q}", ""]
            for name in ("original", "sft", "ppo"):
                if name in replies:
                    r = replies[name][i]
                    lines += [f"*{name}* (RM {r['rm_score']:+.2f}):", "", _quote(r["reply"]), ""]
    return "\n".join(lines) + "\n"


def write_real_report(cfg: ConfigDict, out: Path) -> dict:
    root = Path(cfg.workdir)
    stages = stage_records(root)
    shown = samples(cfg)
    replies = policy_replies(cfg)
    load = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(cfg, stages, shown, replies, load))
    write_json_atomic(out / "summary.json", {"model": cfg.model.name, "model_sizes": 1, "stages": stages,
                                             "samples": shown, "policy_replies": replies,
                                             "load_average": list(load)})
    print((out / "report.md").read_text(), flush=True)
    return {"seconds_before_report": round(sum(s["seconds"] for s in stages.values()), 1),
            "stages_reported": len(stages), "load_average_15m": round(load[2], 2)}
