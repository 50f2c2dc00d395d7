"""The optional method stages of the pipeline (run when named in `cfg.methods`; see runner.py):
best-of-n, expert iteration, RLOO and GRPO, each from the `sft` stage's RM-guided policy (the PPO
start) and against the `reward` stage's RM.

Every method stage's summary holds `"policies": {key: {"label": str, "params": str}}` (a policy
the report decodes on the held-out tasks like every other row) or, for an inference-time policy
without weights, `{"label": str, "replies": str}` (a JSON file {task id: reply} on those tasks).
The report adds one row per entry: oracle score, RM score and win-rates vs the prompted baseline.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from almost_jax.pipeline.job_configs import expert_iteration_job, rl_method_job, sampler_setup, sft_start, world_paths


def run_best_of_n(cfg: ConfigDict, out: Path) -> dict:
    """Best-of-n of the SFT (RM) policy on the held-out tasks for every n in `cfg.best_of_n.ns`:
    one pass of max(ns) samples per task, the RM's pick among the first n of them. Replies are
    stored for the report; the mean RM score of the picks is the summary's (the oracle only
    scores them in the report)."""
    from almost_jax.data import chat
    from almost_jax.data.schemas import PromptRecord, load_jsonl, write_json_atomic
    from almost_jax.learners.reward import load_reward_model
    from almost_jax.sampling.best_of_n import best_index, sample_candidates
    from almost_jax.synthetic.generation import build_sampler
    b = cfg.best_of_n
    root = Path(cfg.workdir)
    ns = sorted({int(n) for n in b.ns})
    sampling = copy.deepcopy(b.sampling)
    with sampling.unlocked():
        sampling.n = ns[-1]
    setup = sampler_setup(cfg, cfg.family[cfg.sft_member].preset, sft_start(cfg), sampling)
    setup.batch_size = max(1, int(cfg.sampling_batch_size) // ns[-1])  # prompts per batch, n rows each
    sampler = build_sampler(setup, sampling)
    tasks = load_jsonl(world_paths(root)["eval_tasks"], PromptRecord)
    scorer = load_reward_model(root / "reward" / "rm", batch_size=int(cfg.sampling_batch_size))
    cands = sample_candidates(sampler, [chat.prompt_for_reply([], t.prompt) for t in tasks],
                              [chat.format_turn(chat.HUMAN, t.prompt) for t in tasks], scorer.raw_scores, seed=int(b.seed))
    write_json_atomic(out / "candidates.json", {t.id: {"replies": r, "rm_scores": [float(x) for x in s]}
                                                 for t, r, s in zip(tasks, cands.replies, cands.scores)})
    summary, policies = {}, {}
    for n in ns:
        idx = best_index(cands.scores, n)
        path = out / f"best_of_{n}.json"
        write_json_atomic(path, {t.id: r[i] for t, r, i in zip(tasks, cands.replies, idx)})
        summary[f"rm_best_of_{n}"] = float(np.mean(cands.scores[np.arange(len(tasks)), idx]))
        policies[f"best_of_{n}"] = {"label": f"best-of-{n} (SFT (RM), T={float(b.sampling.temperature):g}, RM picks)",
                                    "replies": str(path)}
    summary["policies"] = policies
    return summary


def run_expert_iteration(cfg: ConfigDict, out: Path) -> dict:
    """Expert iteration from the SFT (RM) policy (jobs/expert_iteration.py)."""
    from almost_jax.jobs import expert_iteration
    result = expert_iteration.run(expert_iteration_job(cfg, out))
    e = cfg.expert_iteration
    summary = {f"iter{r['iteration']}_{k}": v for r in result["iterations"] for k, v in r.items() if k != "iteration"}
    summary["policies"] = {"expert_iteration": {
        "label": f"expert iteration ({int(e.iterations)} x best-of-{int(e.n)} -> SFT)", "params": result["final_params"]}}
    return summary


def run_rl_method(algorithm: str, cfg: ConfigDict, out: Path) -> dict:
    """RLOO or GRPO from the SFT (RM) policy against the RM (jobs/rl.py, the PPO stage's job)."""
    from almost_jax.jobs import rl
    result = rl.run(rl_method_job(cfg, out, algorithm))
    result["policies"] = {algorithm: {"label": f"{algorithm.upper()} from SFT (RM)", "params": str(out / "params")}}
    return result


def preference_runners() -> list[tuple[str, tuple[str, ...], object]]:
    """(stage name, config blocks, runner) of the preference methods (pipeline/preference_stages.py):
    DPO, DPO on oracle-labelled pairs (a control), Selfie/SPA, CUT."""
    from almost_jax.pipeline import preference_stages as P
    return [("dpo", ("dpo",), P.run_dpo), ("dpo_oracle", ("dpo",), P.run_dpo_oracle), ("spa", ("spa",), P.run_spa),
            ("cut", ("cut",), P.run_cut)]
