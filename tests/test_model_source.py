"""One rule for every job that takes weights: an HF checkpoint dir as `params` / `init_from` gives the
architecture and the tokenizer too, unless they are set explicitly (checkpoints/source.py), and a
config file's defaults yield to an HF dir given on the command line."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from almost_jax.checkpoints import source
from almost_jax.config_lib import load_config_file, model_block, tokenizer_fields
from tests.hf_fixtures import save_bpe_tokenizer, save_tiny_llama

REPO = Path(__file__).resolve().parents[1]
VOCAB = 400


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random HF LLaMA (vocab 400, 2 layers, d=64) with a byte-level BPE tokenizer of its
    vocab saved beside it, as a downloaded checkpoint holds them."""
    d = tmp_path_factory.mktemp("hf_model")
    save_tiny_llama(d, vocab=VOCAB, tie=True)
    _, n = save_bpe_tokenizer(d, vocab_size=VOCAB)
    assert n == VOCAB
    return d


def setup_block(**kw):
    return ConfigDict({**dict(model=model_block("mini-s"), params="", **tokenizer_fields()), **kw})


def test_hf_params_give_architecture_and_tokenizer(hf_dir, tmp_path):
    src = source.resolve(setup_block(params=str(hf_dir)))
    assert (src.model.vocab_size, src.model.hidden_size, src.model.tie_word_embeddings) == (VOCAB, 64, True)
    assert src.tokenizer.path == hf_dir / "tokenizer.json" and src.tokenizer.eos_id == 2
    assert src.model_from.startswith(str(hf_dir / "config.json"))

    # explicit choices win: another config.json dir, another tokenizer (its vocab must still fit)
    other = tmp_path / "other"
    save_tiny_llama(other, vocab=VOCAB, tie=False)
    save_bpe_tokenizer(other, vocab_size=VOCAB, eos="<|endoftext|>")
    block = setup_block(params=str(hf_dir), tokenizer=str(other))
    block.model.hf_path = str(other)
    src = source.resolve(block)
    assert not src.model.tie_word_embeddings and src.tokenizer.eos_id == 0
    assert src.tokenizer_from == "tokenizer"

    # special-token overrides ride along with whichever tokenizer is used
    src = source.resolve(setup_block(params=str(hf_dir), tokenizer_eos="<|endoftext|>", tokenizer_pad="1"))
    assert (src.tokenizer.eos_id, src.tokenizer.pad_id) == (0, 1)


def test_nested_keys_and_errors(hf_dir, tmp_path):
    job = ConfigDict(dict(init_from=str(hf_dir), model=model_block("mini-s"),
                          data=ConfigDict(dict(train="", **tokenizer_fields()))))
    src = source.resolve(job, "init_from")  # sft / train_rm: the tokenizer lives in data.tokenizer
    assert src.model.vocab_size == VOCAB and src.tokenizer.vocab_size == VOCAB

    with pytest.raises(ValueError, match="no tokenizer: set tokenizer.*Hugging Face checkpoint dir"):
        source.resolve(setup_block(params=str(tmp_path)))  # not an HF dir: nothing to take it from
    bare = tmp_path / "bare"
    save_tiny_llama(bare, vocab=VOCAB)
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.json or tokenizer.model: set tokenizer"):
        source.resolve(setup_block(params=str(bare)))
    block = setup_block(params=str(hf_dir))
    block.model.hf_path = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.hf_path: no config.json"):
        source.resolve(block)
    # without an HF dir, the preset describes the model (the mini world's 512-token vocab)
    assert source.resolve(setup_block(), with_tokenizer=False).model.vocab_size == 512


def test_command_line_params_replace_the_config_files_defaults(hf_dir):
    chat_cfg = load_config_file(REPO / "configs/mini/chat.py")
    assert chat_cfg.tokenizer  # the mini world's tokenizer is the file's default

    cfg = copy.deepcopy(chat_cfg)
    cfg.params = str(hf_dir)
    assert source.follow_params_from_command_line(cfg, {"params"}) == ["tokenizer"]
    src = source.resolve(cfg)
    assert src.tokenizer.path == hf_dir / "tokenizer.json" and src.model.vocab_size == VOCAB

    cfg = copy.deepcopy(chat_cfg)  # a tokenizer given on the command line too stays
    cfg.params, cfg.tokenizer = str(hf_dir), "/my/tokenizer.model"
    assert source.follow_params_from_command_line(cfg, {"params", "tokenizer"}) == []
    assert cfg.tokenizer == "/my/tokenizer.model"

    cfg = copy.deepcopy(chat_cfg)  # params not on the command line: the file's defaults belong together
    assert source.follow_params_from_command_line(cfg, {"sampling.temperature"}) == []

    cfg = copy.deepcopy(chat_cfg)  # an explicit preset must describe the weights
    cfg.params = str(hf_dir)
    with pytest.raises(ValueError, match="model.preset=mini-s does not describe the weights"):
        source.follow_params_from_command_line(cfg, {"params", "model.preset"})

    from almost_jax.jobs.queries import queries_config  # nested: the generator setup
    q = queries_config()
    q.generator.params, q.generator.tokenizer = str(hf_dir), "/default/tokenizer.model"
    assert source.follow_params_from_command_line(q, {"generator.params"}) == ["generator.tokenizer"]


# ---------------------------------------------------------------- every job that takes weights

def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def test_chat_command_line_takes_everything_from_an_hf_dir(hf_dir):
    """The issue's command: only --config.params=<HF dir> on the mini chat config (whose default
    tokenizer and preset are the mini world's)."""
    cmd = [sys.executable, "-m", "almost_jax.jobs.chat", f"--config={REPO}/configs/mini/chat.py",
           f"--config.params={hf_dir}", "--config.sampling.max_new_tokens=4", "--prompt=Hello world"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"tokenizer: {hf_dir / 'tokenizer.json'} (HFTokenizer, 400 tokens" in proc.stderr
    assert str(hf_dir / "config.json") in proc.stderr


def test_queries_sft_pretrain_eval_policy_take_an_hf_dir(hf_dir, tmp_path):
    from almost_jax.jobs import eval_policy, pretrain, queries, sft
    from almost_jax.jobs.sft_config import sft_config

    q = queries.queries_config()  # default generator preset: llama1-30b
    q.update(dict(output=str(tmp_path / "q.jsonl"), num_queries=2, batch_prompts=2, max_rounds=1, n_shots=2))
    q.generator.params = str(hf_dir)
    q.generator.update(dict(batch_size=2, bucket=16))
    q.generator.model.update(dict(dtype="float32", param_dtype="float32"))
    q.generator.sampling.max_new_tokens = 4
    summary = queries.run(q)
    assert summary["rounds"] == 1

    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "turns": [
        {"speaker": "human", "text": "Hello world"}, {"speaker": "assistant", "text": "How are you today?"}]}) + "\n"
        for i in range(2)))
    s = sft_config(steps=1, batch_size=2, seq_len=32)  # default preset: mini-s (vocab 512)
    s.update(dict(workdir=str(tmp_path / "sft"), init_from=str(hf_dir), eval_batch_size=2))
    s.data.update(dict(train=str(tmp_path / "d.jsonl"), eval_fraction=0.0, pack=False))
    s.train.progress = False
    assert sft.run(s)["steps"] == 1

    p = load_config_file(REPO / "configs/mini/pretrain.py")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Hello world. " * 20] * 4))
    p.update(dict(workdir=str(tmp_path / "pt"), init_from=str(hf_dir)))
    p.data.update(dict(corpus=str(tmp_path / "c.jsonl"), tokenizer=""))
    p.train.update(dict(steps=1, batch_size=2, seq_len=32, progress=False))
    assert (pretrain.run(p) / "_CHECKPOINT_METADATA").exists() or (tmp_path / "pt" / "params").exists()

    (tmp_path / "tqa.json").write_text(json.dumps([{"question": "Is the sky blue?", "mc1_targets": {
        "choices": ["Yes, it is.", "No."], "labels": [1, 0]}}]))
    e = load_config_file(REPO / "configs/mini/eval_policy.py")
    e.update(dict(params=str(hf_dir), tokenizer="", files=[str(tmp_path / "tqa.json")], output="", batch_size=2,
                  max_len=128))
    e.truthfulqa.mode = "loglik_sum"
    (result,) = eval_policy.run(e)
    assert result["n"] == 1 if "n" in result else result
