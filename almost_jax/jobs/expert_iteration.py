"""Expert iteration (AlpacaFarm; facts in peers.md 1.7): the policy answers unlabelled prompts n
times, the reward model keeps the best reply (sampling/best_of_n.py), and SFT (jobs/sft.py, the one
trainer) fits the policy to those replies; repeated `iterations` times.

    python -m almost_jax.jobs.expert_iteration --config=configs/mini/expert_iteration.py
    python -m almost_jax.jobs.expert_iteration --config=configs/mini/expert_iteration.py --config.iterations=1

Iteration i samples from the policy of iteration i-1 (iteration 0 from `policy_init`). Its SFT
starts from `policy_init` again (`finetune_from="start"`, as AlpacaFarm's single round and STaR's
rounds do: each round refits the same start to better data, so errors do not compound through
successive fine-tunes) or from the previous round's policy (`finetune_from="previous"`).

Outputs in workdir: iter_<i>/dialogues.jsonl (each prompt with its picked reply and every
candidate's RM score, the format SFT and RMSP share), iter_<i>/sft/ (the SFT job's params/ and
manifest), manifest.json with per-iteration RM scores and `final_params`. A rerun skips finished
pieces (a written dialogues file, an SFT with its manifest); an interrupted SFT resumes from its
checkpoints. With `gold="miniworld"` the oracle's scores of the picks are logged beside the RM's
(evaluation only: nothing is selected or trained by them).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from almost_jax.data import chat
from almost_jax.data.schemas import Candidate, DialogueRecord, DialogueTurn, PromptRecord, load_jsonl, write_jsonl_atomic
from almost_jax.jobs import sft
from almost_jax.jobs.common import read_manifest, run_job, write_manifest
from almost_jax.sampling.best_of_n import best_index, sample_candidates
from almost_jax.synthetic.generation import build_reward_scorer, build_sampler

log = logging.getLogger(__name__)


def best_of_n_dialogues(cfg: ConfigDict, params: str, prompts: list[PromptRecord], seed: int) -> list[DialogueRecord]:
    """One single-turn dialogue per prompt: the best of `cfg.n` replies of the policy in `params`.
    The sampler and the RM live only in here, so neither holds memory while the SFT trains."""
    setup = copy.deepcopy(cfg.policy)
    with setup.unlocked():  # job configs from the command line are locked, nested blocks included
        setup.params = params
    sampler = build_sampler(setup, ConfigDict({**setup.sampling.to_dict(), "n": int(cfg.n)}))
    scorer = build_reward_scorer(cfg.rm)
    queries = [p.prompt for p in prompts]
    cands = sample_candidates(sampler, [chat.prompt_for_reply([], q) for q in queries],
                              [chat.format_turn(chat.HUMAN, q) for q in queries], scorer.raw_scores, seed=seed,
                              progress=bool(cfg.progress))
    best = best_index(cands.scores, cands.n)
    return [DialogueRecord(id=p.id, meta={"best_index": int(b)}, turns=[
        DialogueTurn(speaker=chat.HUMAN, text=p.prompt),
        DialogueTurn(speaker=chat.ASSISTANT, text=replies[b],
                     candidates=[Candidate(text=r, score=float(s)) for r, s in zip(replies, scores)])])
        for p, replies, scores, b in zip(prompts, cands.replies, cands.scores, best)]


def sft_job(cfg: ConfigDict, iteration: int, train_file: Path, previous: str) -> ConfigDict:
    """The SFT job of one iteration: the `sft` block with the policy's model and tokenizer."""
    from almost_jax.config_lib import tokenizer_fields
    job = copy.deepcopy(cfg.sft)
    with job.unlocked():
        job.workdir = str(Path(cfg.workdir) / f"iter_{iteration}" / "sft")
        job.init_from = cfg.policy_init if cfg.finetune_from == "start" else previous
        job.model = copy.deepcopy(cfg.policy.model)
        job.data.update({k: cfg.policy[k] for k in tokenizer_fields() if k in cfg.policy})
        job.data.train = str(train_file)
        job.data.format = "dialogues"
    return job


def iteration_stats(dialogues: list[DialogueRecord], gold: str) -> dict:
    """Mean RM score of the picked replies and of one random sample (the first), and with the
    mini world's oracle the same two under the gold score (evaluation only)."""
    picked = [d.turns[1].text for d in dialogues]
    first = [d.turns[1].candidates[0].text for d in dialogues]
    out = {"rm_best": float(np.mean([max(c.score for c in d.turns[1].candidates) for d in dialogues])),
           "rm_sample": float(np.mean([d.turns[1].candidates[0].score for d in dialogues]))}
    if gold == "miniworld":
        from almost_jax.miniworld import oracle
        queries = [d.turns[0].text for d in dialogues]
        out["gold_best"] = float(np.mean([oracle.score(q, r) for q, r in zip(queries, picked)]))
        out["gold_sample"] = float(np.mean([oracle.score(q, r) for q, r in zip(queries, first)]))
    return out


def run(cfg: ConfigDict) -> dict:
    out = Path(cfg.workdir)
    if cfg.finetune_from not in ("start", "previous"):
        raise ValueError(f"finetune_from must be 'start' or 'previous', got {cfg.finetune_from!r}")
    if cfg.gold not in ("", "miniworld"):
        raise ValueError(f"gold scorer must be '' or 'miniworld', got {cfg.gold!r}")
    if int(cfg.iterations) < 1 or int(cfg.n) < 1:
        raise ValueError(f"iterations and n must be >= 1, got {cfg.iterations} and {cfg.n}")
    prompts = load_jsonl(cfg.prompts, PromptRecord, cfg.on_error)[: int(cfg.max_prompts) or None]
    if not prompts:
        raise ValueError(f"no prompts in {cfg.prompts}")
    policy, rows = str(cfg.policy_init), []
    for i in range(int(cfg.iterations)):
        data = out / f"iter_{i}" / "dialogues.jsonl"
        if not data.exists():
            dialogues = best_of_n_dialogues(cfg, policy, prompts, int(cfg.seed) + i)
            write_jsonl_atomic(data, dialogues)
        dialogues = load_jsonl(data, DialogueRecord)
        job = sft_job(cfg, i, data, policy)
        done = read_manifest(Path(job.workdir) / "manifest.json")
        result = {k: done.get(k) for k in ("final_loss", "eval_loss", "steps")} if done else sft.run(job)
        policy = str(Path(job.workdir) / "params")
        rows.append({"iteration": i, "sft_final_loss": result.get("final_loss"), **iteration_stats(dialogues, cfg.gold)})
        log.info("expert iteration %d: %s", i, rows[-1])
    summary = {"iterations": rows, "final_params": policy, "n": int(cfg.n), "prompts": len(prompts)}
    write_manifest(out / "manifest.json", cfg, **summary)
    return summary


def expert_iteration_config(preset: str = "llama1-7b") -> ConfigDict:
    """AlpacaFarm's recipe: best-of-16 at temperature 1.0 from the SFT policy on unlabelled prompts,
    then SFT from that start with the SFT recipe (3 epochs, lr 2e-5); AlpacaFarm scripts one round.

    policy: the sampler setup (model, tokenizer, sampling; `params` is set per iteration);
    sft: the SFT job block (workdir, init_from and data.train are set per iteration);
    rm: the reward model (`path`: the directory train_rm wrote). The SFT uses the policy's model
    and tokenizer fields (`policy.model`, `policy.tokenizer*`), not the sft block's own."""
    from almost_jax.config_lib import model_block, tokenizer_fields
    from almost_jax.jobs.sft_config import sft_config
    cfg = ConfigDict(dict(
        workdir="work_dir/expert_iteration", prompts="", max_prompts=0, on_error="raise", seed=0,
        policy_init="", iterations=1, n=16, finetune_from="start", gold="", progress=False,
        policy=ConfigDict(dict(model=model_block(preset), params="", **tokenizer_fields(), batch_size=32, bucket=64,
                               sampling=ConfigDict(dict(temperature=1.0, top_p=1.0, max_new_tokens=300,
                                                        stop_strings=("\n\nHuman:",))))),
        rm=ConfigDict(dict(path="", batch_size=32)),
        sft=sft_config(preset)))
    return cfg


if __name__ == "__main__":
    run_job(run)
