"""HF <-> Flax conversion: logit parity with transformers, exact round trips, clear errors, sharded load."""
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from almost_jax.checkpoints.hf import load_hf_checkpoint, load_hf_config, save_hf_checkpoint
from almost_jax.models.llama import CausalLM, positions_from_mask
from tests.hf_fixtures import left_padded_batch, save_tiny_llama
from tests.multidevice import run_with_devices


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_logit_parity_with_transformers_left_padded(tmp_path, kind):
    path, hf = save_tiny_llama(tmp_path / kind, kind=kind, seed=1)
    cfg, params = load_hf_checkpoint(path)
    assert cfg.kv_heads == (4 if kind == "mha" else 2) and (cfg.rope_scaling is not None) == (kind == "gqa")
    ids, mask = left_padded_batch(cfg.vocab_size, [40, 23, 7, 1], seed=2)
    pos = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits.numpy()
    got, _ = CausalLM(cfg).apply({"params": params}, ids.astype(np.int32), mask.astype(np.int32))
    diff = np.abs(np.asarray(got) - ref)[mask.astype(bool)]
    assert diff.max() <= 1e-4, diff.max()


@pytest.mark.parametrize("fmt,tie", [("safetensors", False), ("sharded", False), ("bin", False), ("bin_sharded", True),
                                     ("safetensors", True)])
def test_round_trip_reproduces_tensors_exactly(tmp_path, fmt, tie):
    kw = dict(safe_serialization=fmt in ("safetensors", "sharded"),
              max_shard_size="60KB" if fmt in ("sharded", "bin_sharded") else None)
    path, hf = save_tiny_llama(tmp_path / "in", kind="gqa", tie=tie, **kw)
    if "sharded" in fmt:
        assert list(path.glob("*.index.json"))
    cfg, params = load_hf_checkpoint(path)
    out = save_hf_checkpoint(params, cfg, tmp_path / "out", max_shard_bytes=50_000)
    assert (out / "model.safetensors.index.json").is_file()  # sharded on the way out too
    from safetensors import safe_open
    got = {}
    for f in out.glob("*.safetensors"):
        with safe_open(str(f), framework="numpy") as sf:
            got.update({k: sf.get_tensor(k) for k in sf.keys()})
    ref = {k: v.numpy() for k, v in hf.state_dict().items()}
    if tie:
        ref.pop("lm_head.weight")
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert load_hf_config(out) == cfg
    assert not list(tmp_path.glob(".out.*tmp"))  # no temp dirs left behind


def test_bf16_safetensors_load(tmp_path):
    path, hf = save_tiny_llama(tmp_path / "m", kind="mha")
    hf.to(torch.bfloat16).save_pretrained(str(tmp_path / "bf16"))
    _, params = load_hf_checkpoint(tmp_path / "bf16")
    assert params["model"]["embed_tokens"]["embedding"].dtype == jnp.bfloat16


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_checkpoint(tmp_path)
    path, _ = save_tiny_llama(tmp_path / "m", kind="mha")
    # unknown architecture
    bad = tmp_path / "gpt2"
    shutil.copytree(path, bad)
    c = json.loads((bad / "config.json").read_text())
    c.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (bad / "config.json").write_text(json.dumps(c))
    with pytest.raises(ValueError, match="unsupported architecture.*gpt2"):
        load_hf_checkpoint(bad)
    # shape mismatch names tensor and both shapes
    cfg = load_hf_config(path)
    with pytest.raises(ValueError, match=r"tensor '[\w.]+' has shape \(128, 64\) but the config expects \(128, 32\)"):
        load_hf_checkpoint(path, cfg.replace(hidden_size=32, head_dim=8))
    with pytest.raises(ValueError, match="vocab_size 128 != model vocab_size 256"):
        load_hf_checkpoint(path, cfg.replace(vocab_size=256))
    # missing tensor
    from safetensors.numpy import load_file, save_file
    t = load_file(str(path / "model.safetensors"))
    t.pop("model.layers.1.mlp.up_proj.weight")
    save_file(t, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensor\(s\) \['model.layers.1.mlp.up_proj.weight'\]"):
        load_hf_checkpoint(path)
    # missing weights
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights in"):
        load_hf_checkpoint(path)


SHARDED_LOAD = """
import numpy as np, jax
from almost_jax.checkpoints.hf import load_hf_checkpoint
from almost_jax.models.llama import abstract_or_init
from almost_jax.parallel import MeshConfig, make_mesh, logical_shardings
cfg, ref = load_hf_checkpoint("{path}")
mesh = make_mesh(MeshConfig(2, 2, 2))
sh = logical_shardings(abstract_or_init(cfg, jax.random.key(0)), mesh)
_, params = load_hf_checkpoint("{path}", shardings=sh)
q = params["model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
assert q.sharding == sh["model"]["layers_0"]["self_attn"]["q_proj"]["kernel"] and "tensor" in str(q.sharding.spec)
for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
print("SHARDED_OK")
"""


def test_sharded_load_onto_mesh(tmp_path):
    path, _ = save_tiny_llama(tmp_path / "m", kind="gqa")
    assert "SHARDED_OK" in run_with_devices(8, SHARDED_LOAD.format(path=path))
