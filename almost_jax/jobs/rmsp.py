"""ALMoST stage 2a: RM-guided self-play -> dialogues for SFT.

    python -m almost_jax.jobs.rmsp --config=configs/mini/rmsp.py

Dialogues are simulated in chunks of `chunk_size` queries, batched across the chunk at every
turn; each finished chunk is appended to `dialogues.jsonl`, and a restarted job skips the query
ids already there, so a kill never duplicates or loses a finished dialogue.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.data import chat
from almost_jax.data.schemas import DialogueRecord, PromptRecord, load_jsonl, read_jsonl
from almost_jax.data.templates import load_prompt_file, prompt_path
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.parallel.hosts import check_same_on_all_hosts, primary_appender
from almost_jax.synthetic.generation import build_reward_scorer, build_sampler
from almost_jax.synthetic.selfplay import SelfPlayConfig, play

log = logging.getLogger(__name__)


def _template(name: str):
    return load_prompt_file(name if Path(name).is_file() else prompt_path(name))


def make_players(cfg: ConfigDict):
    sp = SelfPlayConfig.from_config(cfg.selfplay)
    a_sampling = ConfigDict({**cfg.assistant.sampling.to_dict(), "n": sp.n_candidates})
    a_sampler = build_sampler(cfg.assistant, a_sampling)
    u_sampler = build_sampler(cfg.user, cfg.user.sampling)
    a_tmpl, u_tmpl = _template(cfg.assistant.template), _template(cfg.user.template)
    seed = [int(cfg.seed)]

    def assistant(prompts, n):
        seed[0] += 1
        outs = [chat.extract_reply(c.text) for c in a_sampler.generate(prompts, seed=seed[0], progress=False)]
        return [outs[i * n:(i + 1) * n] for i in range(len(prompts))]

    def user(prompts):
        seed[0] += 1
        return [c.text for c in u_sampler.generate(prompts, seed=seed[0], progress=False)]

    scorer = build_reward_scorer(cfg.rm)  # best of N by raw RM score (normalising cannot change an argmax)
    return sp, assistant, user, scorer.raw_scores, (lambda h: a_tmpl.render_dialogue(int(cfg.assistant.n_shots), h, "assistant")), \
        (lambda h: u_tmpl.render_dialogue(int(cfg.user.n_shots), h, "human"))


def run(cfg: ConfigDict) -> dict:
    out = Path(cfg.workdir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dialogues.jsonl"
    queries = load_jsonl(cfg.queries, PromptRecord, cfg.on_error)[: int(cfg.max_queries) or None]
    done = {r.id for r in read_jsonl(path, DialogueRecord, on_error="skip")} if path.exists() else set()
    todo = [(q.id, q.prompt) for q in queries if q.id not in done]
    check_same_on_all_hosts(" ".join(i for i, _ in todo), f"unfinished dialogues in {path}")
    log.info("rmsp: %d dialogues to simulate (%d already done)", len(todo), len(done))
    if todo:
        sp, assistant, user, score, a_prompt, u_prompt = make_players(cfg)
        chunk = int(cfg.chunk_size)
        with primary_appender(path) as sink:
            for start in range(0, len(todo), chunk):
                for record in play(todo[start:start + chunk], assistant, user, score, a_prompt, u_prompt, sp):
                    sink.write(record)
                log.info("rmsp: %d/%d dialogues", min(start + chunk, len(todo)), len(todo))
    dialogues = load_jsonl(path, DialogueRecord)
    turns = [sum(t.speaker == "assistant" for t in d.turns) for d in dialogues]
    summary = {"dialogues": len(dialogues), "assistant_turns": sum(turns),
               "mean_assistant_turns": sum(turns) / max(len(turns), 1)}
    write_manifest(out / "manifest.json", cfg, **summary)
    return summary


def rmsp_config() -> ConfigDict:
    """Defaults: N=4 candidates, up to 3 assistant turns (the paper's values were not recovered)."""
    setup = lambda: ConfigDict(dict(  # noqa: E731
        model=ConfigDict(dict(preset="llama1-30b", hf_path="", dtype="bfloat16", param_dtype="bfloat16", remat=False,
                              attention_impl="xla")),
        params="", tokenizer="", batch_size=32, bucket=64, template="", n_shots=3,
        sampling=ConfigDict(dict(temperature=1.0, top_p=0.9, max_new_tokens=384, n=1,
                                 stop_strings=("\n\nHuman:", "\n\n-----")))))
    cfg = ConfigDict(dict(workdir="work_dir/rmsp", queries="", max_queries=0, on_error="raise", seed=0, chunk_size=64,
                          selfplay=ConfigDict(dict(n_candidates=4, max_assistant_turns=3, selection="rm",
                                                   end_markers=("[END]",))),
                          assistant=setup(), user=setup(),
                          rm=ConfigDict(dict(path="", batch_size=32))))  # path: the RM dir train_rm wrote
    cfg.assistant.template = "assistant_detailed.txt"
    cfg.user.sampling.stop_strings = ("\n\nAssistant:", "\n\n-----")
    cfg.user.sampling.max_new_tokens = 64
    return cfg


if __name__ == "__main__":
    run_job(run)
