"""Talk to any checkpoint: one prompt, or an interactive loop.

    python -m almost_jax.jobs.chat --config=configs/mini/chat.py --prompt="What is 2 + 3?"
    python -m almost_jax.jobs.chat --config=configs/mini/chat.py --config.params=/ckpt/llama-2-7b-hf   # then type

An HF checkpoint dir as `params` brings its architecture and tokenizer (checkpoints/source.py).

Without --prompt, each stdin line is a user turn; the dialogue so far is kept in the chat format
(`data.chat`) and dropped from the oldest exchange on when the prompt would not fit the model's
context. `/reset` clears the history, `/quit` (or end of input) exits. A few-shot `template`
(a prompt file, `n_shots` dialogues) prompts a vanilla model the way the data jobs do.
Replies come from the ordinary `Sampler` (greedy when sampling.temperature is 0). With
`best_of_n` > 1 and a `reward_model` (the directory train_rm wrote), each reply is the RM's pick
of best_of_n sampled replies (sampling/best_of_n.py; set a temperature > 0):

    python -m almost_jax.jobs.chat --config=configs/mini/chat.py --config.best_of_n=4 \
        --config.reward_model=work_dir/mini/reward/rm --config.sampling.temperature=1.0
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, Optional, TextIO

import numpy as np
from absl import flags
from ml_collections import ConfigDict

from almost_jax.data import chat
from almost_jax.data.templates import PromptTemplate, load_prompt_file, prompt_path
from almost_jax.jobs.common import run_job
from almost_jax.learners.reward import load_reward_model
from almost_jax.sampling.best_of_n import pick_best, sample_candidates
from almost_jax.synthetic.generation import build_sampler

log = logging.getLogger(__name__)


def build_prompt(history: list[tuple[str, str]], query: str, template: Optional[PromptTemplate] = None,
                 n_shots: int = 0) -> str:
    """The dialogue so far + the new query, ending with "\\n\\nAssistant:" (after `n_shots`
    demonstration dialogues of `template` when given)."""
    if template is None or n_shots == 0:  # n_shots -1: every dialogue of the template
        return chat.prompt_for_reply(history, query)
    return template.render_dialogue(n_shots, list(history) + [(chat.HUMAN, query)], chat.ASSISTANT)


class ChatSession:
    """The history of one conversation and how each turn's prompt is built.

    generate: (prompt, context) -> raw continuation, where context is the dialogue so far ending
    with the new query, in the chat format without few-shot demonstrations (what a reward model
    scores a reply against); count_tokens: prompt -> its length in tokens;
    max_tokens: the longest prompt the model can take (older exchanges are dropped to fit);
    truncations: the sampler's count of prompts it had to cut.
    """

    def __init__(self, generate: Callable[[str, str], str], count_tokens: Callable[[str], int], max_tokens: int,
                 template: Optional[PromptTemplate] = None, n_shots: int = 0, truncations=None):
        self.generate, self.count_tokens, self.max_tokens = generate, count_tokens, max_tokens
        self.template, self.n_shots, self.truncations = template, n_shots, truncations
        self.history: list[tuple[str, str]] = []

    def prompt(self, query: str) -> tuple[str, int]:
        """(prompt, how many earlier turns it keeps): whole exchanges are dropped from the left
        while the prompt is too long; a query too long on its own is left to the sampler, which
        keeps the prompt's last tokens."""
        kept = self.history
        while True:
            prompt = build_prompt(kept, query, self.template, self.n_shots)
            if not kept or self.count_tokens(prompt) <= self.max_tokens:
                return prompt, len(kept)
            kept = kept[2:]

    def reply(self, query: str) -> str:
        prompt, kept = self.prompt(query)
        n = self.count_tokens(prompt)
        log.info("prompt: %d tokens, %d earlier turns", n, kept)
        if n > self.max_tokens:
            log.warning("the prompt has %d tokens but the model takes %d: only its last %d tokens are kept "
                        "(%d dropped from the start%s)", n, self.max_tokens, self.max_tokens, n - self.max_tokens,
                        ", including the few-shot demonstrations" if self.template is not None else "")
        if kept < len(self.history):
            log.warning("dropped the %d oldest turns of the conversation to fit the model's context",
                        len(self.history) - kept)
        context = chat.format_dialogue(self.history[len(self.history) - kept:] + [(chat.HUMAN, query)])
        text = chat.extract_reply(self.generate(prompt, context))
        self.history += [(chat.HUMAN, query), (chat.ASSISTANT, text)]
        return text

    def reset(self) -> None:
        self.history = []


def chat_loop(session: ChatSession, stdin: TextIO, stdout: TextIO, interactive: bool = False) -> int:
    """Read user lines until /quit or end of input; returns the number of replies."""
    replies = 0
    while True:
        if interactive:
            stdout.write("Human: ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            break
        query = line.strip()
        if not query:
            continue
        if query == "/quit":
            break
        if query == "/reset":
            session.reset()
            stdout.write("(history cleared)\n")
        else:
            stdout.write(f"Assistant: {session.reply(query)}\n")
            replies += 1
        stdout.flush()
    return replies


def make_session(cfg: ConfigDict) -> ChatSession:
    n = int(cfg.get("best_of_n", 1))
    if n < 1:
        raise ValueError(f"best_of_n must be >= 1, got {n}")
    if n > 1 and not cfg.get("reward_model"):
        raise ValueError("best_of_n > 1 needs --config.reward_model=<the RM directory train_rm wrote>")
    if n > 1 and float(cfg.sampling.temperature) == 0.0:
        raise ValueError("best_of_n > 1 with greedy sampling (temperature 0) gives n identical replies; "
                         "set --config.sampling.temperature (e.g. 1.0)")
    sampler = build_sampler(cfg, ConfigDict({**cfg.sampling.to_dict(), "n": n}))
    scorer = load_reward_model(cfg.reward_model, batch_size=n) if n > 1 else None
    template = None
    if cfg.template and int(cfg.n_shots) != 0:
        template = load_prompt_file(cfg.template if Path(cfg.template).is_file() else prompt_path(cfg.template))
    seed = [int(cfg.seed)]

    def generate(prompt: str, context: str) -> str:
        seed[0] += 1
        if scorer is None:
            return list(sampler.generate([prompt], seed=seed[0], progress=False))[0].text
        cands = sample_candidates(sampler, [prompt], [context], scorer.raw_scores, seed=seed[0])
        log.info("best of %d: RM scores %s", n, np.round(cands.scores[0], 3).tolist())
        return pick_best(cands)[0]

    def count_tokens(prompt: str) -> int:
        return len(sampler.tok.encode(prompt, add_bos=sampler.add_bos))

    return ChatSession(generate, count_tokens, sampler.max_prompt_len, template, int(cfg.n_shots),
                       truncations=sampler.truncations)


def run(cfg: ConfigDict, prompt: Optional[str] = None) -> None:
    if prompt is not None and not prompt.strip():
        raise ValueError("--prompt is empty: give a message, or leave --prompt out to chat on stdin")
    session = make_session(cfg)
    if prompt is not None:
        print(session.reply(prompt), flush=True)
        return
    chat_loop(session, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())


if __name__ == "__main__":
    run_job(run, extra_flags=lambda: {
        "prompt": flags.DEFINE_string("prompt", None, "reply to this one prompt and exit (default: read stdin)")})
