"""The chat command: prompts carry the dialogue history (and drop its oldest exchanges to fit),
/reset and /quit, few-shot templates, and the job end to end in one-prompt and stdin-loop mode."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from almost_jax.data import chat
from almost_jax.data.templates import load_prompt_file, prompt_path
from almost_jax.jobs.chat import ChatSession, build_prompt, chat_loop
from tests.test_policy_eval import TOKENIZER_VOCAB, build_tiny_world

REPO = Path(__file__).resolve().parents[1]
H, A = chat.HUMAN, chat.ASSISTANT


class Recorder:
    """A fake model: answers "r<k>" (plus junk after a new turn label) and records its prompts."""

    def __init__(self):
        self.prompts, self.contexts = [], []

    def __call__(self, prompt, context):
        self.prompts.append(prompt)
        self.contexts.append(context)
        return f" r{len(self.prompts)}\n\nHuman: made-up next question"


def test_history_is_in_the_next_prompt_and_reset_clears_it():
    gen = Recorder()
    s = ChatSession(gen, len, max_tokens=10_000)
    assert s.reply("q1") == "r1"
    assert s.reply("q2") == "r2"
    assert gen.prompts[0] == "\n\nHuman: q1\n\nAssistant:"
    assert gen.prompts[1] == "\n\nHuman: q1\n\nAssistant: r1\n\nHuman: q2\n\nAssistant:"
    assert s.history == [(H, "q1"), (A, "r1"), (H, "q2"), (A, "r2")]
    assert gen.contexts == ["\n\nHuman: q1", "\n\nHuman: q1\n\nAssistant: r1\n\nHuman: q2"]  # what an RM scores
    s.reset()
    s.reply("q3")
    assert gen.prompts[2] == chat.prompt_for_reply([], "q3")


def test_oldest_exchanges_are_dropped_to_fit():
    gen = Recorder()
    s = ChatSession(gen, len, max_tokens=10_000)
    for q in ("first question", "second question", "third question"):
        s.reply(q)
    last_two = [(H, "second question"), (A, "r2"), (H, "third question"), (A, "r3")]
    s.max_tokens = len(chat.prompt_for_reply(last_two, "fourth"))
    assert s.prompt("fourth") == (chat.prompt_for_reply(last_two, "fourth"), 4)
    s.max_tokens -= 1
    assert s.prompt("fourth") == (chat.prompt_for_reply(last_two[2:], "fourth"), 2)
    s.max_tokens = 5  # nothing fits: the query alone goes to the sampler, which keeps its last tokens
    assert s.prompt("fourth") == (chat.prompt_for_reply([], "fourth"), 0)
    assert len(s.history) == 6  # fitting a prompt never forgets the history itself
    s.max_tokens = len(chat.prompt_for_reply(last_two, "fourth")) - 1
    s.reply("fourth")
    assert gen.contexts[-1] == chat.format_dialogue(last_two[2:] + [(H, "fourth")])  # the RM sees what was kept


def test_few_shot_context_has_no_demonstrations():
    gen = Recorder()
    tmpl = load_prompt_file(prompt_path("mini_plain.txt"))
    ChatSession(gen, len, 10_000, tmpl, 2).reply("q1")
    assert gen.prompts[0].startswith(tmpl.head(2)) and gen.contexts == ["\n\nHuman: q1"]


def test_few_shot_template_prompt():
    tmpl = load_prompt_file(prompt_path("mini_plain.txt"))
    history = [(H, "q1"), (A, "r1")]
    p = build_prompt(history, "q2", tmpl, 2)
    assert p == tmpl.head(2) + "\n\nHuman: q1\n\nAssistant: r1\n\nHuman: q2\n\nAssistant:"
    assert build_prompt(history, "q2", tmpl, 0) == chat.prompt_for_reply(history, "q2")


def test_loop_commands():
    gen = Recorder()
    out = io.StringIO()
    n = chat_loop(ChatSession(gen, len, 10_000), io.StringIO("q1\n\n  \nq2\n/reset\nq3\n/quit\nq4\n"), out)
    assert n == 3
    assert out.getvalue() == "Assistant: r1\nAssistant: r2\n(history cleared)\nAssistant: r3\n"
    assert gen.prompts[1].startswith("\n\nHuman: q1\n\nAssistant: r1")
    assert gen.prompts[2] == chat.prompt_for_reply([], "q3")
    assert chat_loop(ChatSession(gen, len, 10_000), io.StringIO("q5"), io.StringIO()) == 1  # EOF ends it


# ---------------------------------------------------------------- the job, end to end

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("chat_world"))


def _run_chat(world, stdin: str, *extra):
    cmd = [sys.executable, "-m", "almost_jax.jobs.chat", f"--config={REPO}/configs/mini/chat.py",
           "--config.model.preset=tiny", f"--config.params={world['params']}",
           f"--config.tokenizer={world['tokenizer']}", f"--config.allow_vocab_padding={256 - TOKENIZER_VOCAB}",
           "--config.sampling.max_new_tokens=8", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [(int(a), int(b)) for a, b in re.findall(r"prompt: (\d+) tokens, (\d+) earlier turns",
                                                                  proc.stderr)]


def _n_tokens(world, prompt):
    from almost_jax.data.tokenizer import load_tokenizer
    return len(load_tokenizer(world["tokenizer"]).encode(prompt, add_bos=True))


def greedy_reference(world, prompt: str, max_new_tokens: int, stops=("\n\nHuman:", "\n\n-----")) -> str:
    """The reply by a plain full forward per step (no KV cache, no sampler): argmax over the
    tokenizer's ids, stop at EOS, cut at the first stop string, then the chat reply rule."""
    import jax
    import numpy as np
    from almost_jax.data.tokenizer import load_tokenizer
    from almost_jax.models.llama import CausalLM
    tok = load_tokenizer(world["tokenizer"])
    ids = tok.encode(prompt, add_bos=True)
    length = len(ids) + max_new_tokens
    fwd = jax.jit(lambda x, m: CausalLM(world["cfg"]).apply({"params": world["model_params"]}, x, m)[0])
    out = []
    for _ in range(max_new_tokens):
        seq = ids + out
        x = np.zeros((1, length), np.int32)
        x[0, :len(seq)] = seq
        m = (np.arange(length) < len(seq)).astype(np.int32)[None]
        t = int(np.argmax(np.asarray(fwd(x, m))[0, len(seq) - 1, :TOKENIZER_VOCAB]))
        if t == tok.eos_id:
            break
        out.append(t)
    text = tok.decode(out)
    cut = min([i for i in (text.find(s) for s in stops) if i >= 0], default=len(text))
    return chat.extract_reply(text[:cut])


def test_chat_job_one_prompt(world):
    out, logged = _run_chat(world, "", "--prompt=hello there")
    assert logged == [(_n_tokens(world, chat.prompt_for_reply([], "hello there")), 0)]
    reference = greedy_reference(world, chat.prompt_for_reply([], "hello there"), 8)
    assert reference and out == reference + "\n"


def test_chat_refuses_an_empty_prompt():
    from almost_jax.config_lib import load_config_file
    from almost_jax.jobs import chat as chat_job
    with pytest.raises(ValueError, match="--prompt is empty"):
        chat_job.run(load_config_file(REPO / "configs/mini/chat.py"), prompt="  ")


def test_too_long_prompts_are_warned_and_counted(world, caplog):
    from almost_jax.config_lib import load_config_file
    from almost_jax.jobs.chat import make_session
    cfg = load_config_file(REPO / "configs/mini/chat.py", [
        "model.preset=tiny", f"params={world['params']}", f"tokenizer={world['tokenizer']}",
        f"allow_vocab_padding={256 - TOKENIZER_VOCAB}", "sampling.max_new_tokens=8"])
    session = make_session(cfg)
    caplog.set_level("WARNING")
    session.reply("hello there " * 200)
    n = _n_tokens(world, chat.prompt_for_reply([], "hello there " * 200))
    assert n > 248  # the tiny model: 256 positions - 8 new tokens
    assert f"the prompt has {n} tokens but the model takes 248: only its last 248 tokens are kept" in caplog.text
    assert "kept its last 248 tokens" in caplog.text  # the sampler's own warning
    assert session.truncations.as_dict() == {"inputs": 1, "truncated": 1, "tokens_dropped": n - 248}


def test_chat_job_loop_keeps_history_until_reset(world):
    out, logged = _run_chat(world, "hello there\nhelp me please\n/reset\nthe answer\n/quit\nnever answered\n")
    replies = re.findall(r"Assistant: (.*?)\n(?=Assistant: |\(history cleared\)\n|$)", out, re.S)
    assert len(replies) == 3 and out.count("(history cleared)\n") == 1, out
    second = chat.prompt_for_reply([(H, "hello there"), (A, replies[0])], "help me please")
    assert logged == [(_n_tokens(world, chat.prompt_for_reply([], "hello there")), 0),
                      (_n_tokens(world, second), 2),
                      (_n_tokens(world, chat.prompt_for_reply([], "the answer")), 0)]
