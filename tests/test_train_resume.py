"""A killed or preempted training job resumes to exactly the params of an uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import sentencepiece as spm
    d = tmp_path_factory.mktemp("corpus")
    rs = np.random.RandomState(0)
    words = ["alpha", "beta", "gamma", "delta", "one", "two", "three", "sum", "of", "is"]
    docs = [" ".join(rs.choice(words, size=rs.randint(5, 40))) for _ in range(400)]
    (d / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    (d / "plain.txt").write_text("\n".join(docs))
    spm.SentencePieceTrainer.train(input=str(d / "plain.txt"), model_prefix=str(d / "sp"), vocab_size=64,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2)
    return d


def _cmd(corpus, workdir, steps, extra=()):
    return [sys.executable, "-m", "almost_jax.jobs.pretrain", f"--config={REPO}/configs/mini/pretrain.py",
            f"--config.workdir={workdir}", f"--config.data.corpus={corpus}/corpus.jsonl",
            f"--config.data.tokenizer={corpus}/sp.model", "--config.data.allow_vocab_padding=256",
            "--config.model.preset=tiny", f"--config.train.steps={steps}", "--config.train.batch_size=8",
            "--config.train.seq_len=32", "--config.train.checkpoint_every=10", "--config.train.log_every=10",
            "--config.train.progress=False", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def _params(workdir):
    from almost_jax.checkpoints.orbax_io import load_params
    import jax
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(load_params(Path(workdir) / "params"))}


def _wait_for_checkpoint(workdir, proc, at_least=20, timeout=120):
    ckpt = Path(workdir) / "checkpoints"
    t0 = time.time()
    while time.time() - t0 < timeout:
        steps = [int(p.name) for p in ckpt.glob("*") if p.name.isdigit()] if ckpt.exists() else []
        if steps and max(steps) >= at_least:
            return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f"job ended before the kill: {proc.stderr.read()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow  # 70 s (400 steps twice); test_sigterm_checkpoints_and_stops stays in the default run
def test_sigkill_then_resume_matches_uninterrupted(corpus, tmp_path):
    steps = 400
    ref = tmp_path / "ref"
    subprocess.run(_cmd(corpus, ref, steps), check=True, env=_env(), cwd=REPO, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(corpus, run, steps), env=_env(), cwd=REPO, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "params").exists()
    resumed = subprocess.run(_cmd(corpus, run, steps), env=_env(), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stderr

    a, b = _params(ref), _params(run)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)


def test_sigterm_checkpoints_and_stops(corpus, tmp_path):
    run = tmp_path / "term"
    proc = subprocess.Popen(_cmd(corpus, run, 100000), env=_env(), cwd=REPO, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run, proc, at_least=10)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Preempted" in err, err[-2000:]
    stopped = int(re.search(r"stopped at step (\d+)", err).group(1))
    saved = [int(p.name) for p in (run / "checkpoints").glob("*") if p.name.isdigit()]
    assert stopped in saved, (stopped, saved)  # the step where SIGTERM arrived was checkpointed
