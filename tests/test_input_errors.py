"""Bad input files end in one InputError that names the file and the line, key or tensor."""
import json
import logging

import pytest
import torch

from almost_jax.checkpoints.hf import load_hf_checkpoint
from almost_jax.config_lib import load_config_file, resolve_field
from almost_jax.data.errors import InputError, reset_skipped, skipped_records
from almost_jax.data.lm_data import read_text_corpus
from almost_jax.data.templates import load_prompt_file
from almost_jax.data.tokenizer import check_vocab
from tests.hf_fixtures import save_tiny_llama
from tests.test_configs import REPO


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    save_tiny_llama(d / "st")
    save_tiny_llama(d / "sharded", max_shard_size="60KB")
    _, model = save_tiny_llama(d / "bin")
    (d / "bin" / "model.safetensors").unlink()
    torch.save(model.state_dict(), str(d / "bin" / "pytorch_model.bin"))
    return d


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("keep", [0.5, 0.001])  # the data cut off; the header itself cut off
def test_truncated_safetensors(checkpoints, tmp_path, keep):
    path = _copy(checkpoints / "st", tmp_path / "m")
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * keep)])
    with pytest.raises(InputError, match="model.safetensors: .*truncated") as e:
        load_hf_checkpoint(path)
    assert e.value.path == str(f)


def test_corrupt_config_json_names_line_and_missing_key(checkpoints, tmp_path):
    path = _copy(checkpoints / "st", tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(cfg, indent=2)[:-40])
    with pytest.raises(InputError, match=r"config\.json:\d+: not valid JSON") as e:
        load_hf_checkpoint(path)
    assert e.value.line is not None
    del cfg["hidden_size"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="config.json: key 'hidden_size': missing required field"):
        load_hf_checkpoint(path)


def test_corrupt_index_json(checkpoints, tmp_path):
    path = _copy(checkpoints / "sharded", tmp_path / "m")
    index = path / "model.safetensors.index.json"
    index.write_text("{\n  \"metadata\": {},\n  \"weight_map\": {\n")
    with pytest.raises(InputError, match=r"model\.safetensors\.index\.json:\d+: not valid JSON"):
        load_hf_checkpoint(path)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(InputError, match="index.json: key 'weight_map': missing"):
        load_hf_checkpoint(path)


def test_bin_holding_a_non_tensor_or_garbage(checkpoints, tmp_path):
    path = _copy(checkpoints / "bin", tmp_path / "m")
    state = torch.load(str(path / "pytorch_model.bin"), weights_only=True)
    state["model.norm.weight"] = 3
    torch.save(state, str(path / "pytorch_model.bin"))
    with pytest.raises(InputError, match="pytorch_model.bin: tensor 'model.norm.weight': holds a int, not a tensor"):
        load_hf_checkpoint(path)
    torch.save([1, 2], str(path / "pytorch_model.bin"))
    with pytest.raises(InputError, match="expected a state dict"):
        load_hf_checkpoint(path)
    (path / "pytorch_model.bin").write_bytes(b"not a zip file at all")
    with pytest.raises(InputError, match="pytorch_model.bin: not a readable PyTorch state dict"):
        load_hf_checkpoint(path)


def test_prompt_file_errors_name_file_and_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Preamble.\n\n-----\n\nsomething before a turn\nHuman: hi\n")
    with pytest.raises(InputError, match=r"p\.txt:5: text outside a turn") as e:
        load_prompt_file(f)
    assert e.value.line == 5
    f.write_bytes(b"Preamble\n\n-----\n\nHuman: \xff\xfe\n")
    with pytest.raises(InputError, match=r"p\.txt: not UTF-8 text"):
        load_prompt_file(f)


def test_corpus_cut_off_last_line_raises_or_is_counted(tmp_path, caplog):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "one"}\n{"text": 2}\n{"text": "thr')
    with pytest.raises(InputError, match=r"c\.jsonl:2: not a JSON object with a 'text' string"):
        read_text_corpus(f)
    reset_skipped()
    with caplog.at_level(logging.WARNING):
        assert read_text_corpus(f, on_error="skip") == ["one"]
    assert "c.jsonl:3: the last line is cut off" in caplog.text
    assert skipped_records() == {str(f): 2}


def test_vocab_mismatch_names_keys_that_exist():
    class Tok:
        path, vocab_size, bos_id, eos_id, pad_id = "t.model", 100, 1, 2, 0
    with pytest.raises(ValueError) as e:
        check_vocab(Tok(), 128)
    message = str(e.value)
    for config, key in [("configs/mini/pretrain.py", "data.allow_vocab_padding"),
                        ("configs/mini/sft.py", "data.allow_vocab_padding"),
                        ("configs/mini/reward.py", "data.allow_vocab_padding"),
                        ("configs/mini/ppo.py", "allow_vocab_padding"),
                        ("configs/mini/chat.py", "allow_vocab_padding"),
                        ("configs/mini/eval_policy.py", "allow_vocab_padding"),
                        ("configs/mini/comparisons.py", "setups.A.allow_vocab_padding"),
                        ("configs/mini/rmsp.py", "assistant.allow_vocab_padding"),
                        ("configs/pod/queries_llama1.py", "generator.allow_vocab_padding")]:
        resolve_field(load_config_file(REPO / config), key)  # the key the message points to exists
        shown = key if key.startswith("data.") or "." not in key else "<setup>.allow_vocab_padding"
        assert f"--config.{shown}" in message, (key, message)
    assert "tokenizer.allow_vocab_padding" not in message
