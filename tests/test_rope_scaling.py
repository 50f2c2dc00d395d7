"""rope_scaling linear / dynamic (NTK) / yarn (and llama3) against transformers, on a tiny random
model whose logits are large enough (std >= 1) that a wrong or missing rope scaling shows: the test
checks that dropping the scaling moves the logits by far more than the parity tolerance."""
import numpy as np
import pytest
import torch
import transformers

import jax.numpy as jnp

from almost_jax.models.config import LlamaConfig, RopeScaling
from almost_jax.models.llama import CausalLM, ScalarHeadModel
from tests.hf_fixtures import hf_to_flax_inline

SEQ = 96  # longer than every original context below, so the scalings are all active
CASES = {
    "linear": (dict(rope_type="linear", factor=4.0), 128),
    "dynamic": (dict(rope_type="dynamic", factor=4.0), 48),  # max_position_embeddings 48 < SEQ
    "yarn": (dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32), 128),
    "yarn_mscale": (dict(rope_type="yarn", factor=8.0, original_max_position_embeddings=16, beta_fast=16, beta_slow=2,
                         mscale=1.0, mscale_all_dim=0.5), 128),
    "llama3": (dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=32), 128),
}


def hf_model(scaling: dict, max_pos: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max_pos, rope_theta=10000.0, rope_scaling=dict(scaling),
        initializer_range=0.2, rms_norm_eps=1e-5)  # 10x the default init: logits std > 1
    return transformers.LlamaForCausalLM(cfg).eval()


def flax_logits(cfg, params, ids, mask):
    return np.asarray(CausalLM(cfg).apply({"params": params}, ids, mask)[0])  # eager: tiny, compiling costs more


@pytest.mark.parametrize("name", list(CASES))
def test_logit_parity_with_transformers(name):
    scaling, max_pos = CASES[name]
    model = hf_model(scaling, max_pos)
    cfg, params = hf_to_flax_inline(model)
    assert cfg.rope_scaling is not None and cfg.rope_scaling.rope_type == scaling["rope_type"]
    ids = np.random.RandomState(1).randint(0, 128, (1, SEQ))
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    ours = flax_logits(cfg, params, jnp.asarray(ids, jnp.int32), jnp.ones((1, SEQ), jnp.int32))
    scale = float(ref.std())
    assert scale >= 1.0, scale
    tol = 1e-4 * scale
    err = float(np.abs(ours - ref).max())
    assert err <= tol, (name, err, tol)
    unscaled = flax_logits(cfg.replace(rope_scaling=None), params, jnp.asarray(ids, jnp.int32),
                           jnp.ones((1, SEQ), jnp.int32))
    assert float(np.abs(unscaled - ref).max()) > 100 * tol  # the test sees a missing scaling


def test_dynamic_rows_are_independent_of_their_batch():
    """Each row uses its own length: a left-padded row scores as it does alone (transformers
    would use the batch's longest row for all rows)."""
    model = hf_model(*CASES["dynamic"])
    cfg, params = hf_to_flax_inline(model)
    rs = np.random.RandomState(2)
    long_row, short_row = rs.randint(3, 128, SEQ), rs.randint(3, 128, 70)
    ids = np.zeros((2, SEQ), np.int32)
    mask = np.zeros((2, SEQ), np.int32)
    ids[0], mask[0] = long_row, 1
    ids[1, SEQ - 70:], mask[1, SEQ - 70:] = short_row, 1
    batch = flax_logits(cfg, params, ids, mask)
    alone = flax_logits(cfg, params, short_row[None].astype(np.int32), np.ones((1, 70), np.int32))
    np.testing.assert_allclose(batch[1, SEQ - 70:], alone[0], atol=1e-4 * float(alone.std()))
    with torch.no_grad():  # the single row against transformers too
        ref = model(torch.tensor(short_row[None])).logits.numpy()
    assert np.abs(alone - ref).max() <= 1e-4 * float(ref.std())
    # a scalar head reads the same value at the last real token of the left-padded row
    sh = ScalarHeadModel(cfg)
    head = {"model": params["model"], "score_head": {"kernel": np.random.RandomState(3).randn(64, 1).astype(np.float32)}}
    padded = np.asarray(sh.apply({"params": head}, ids, mask))
    single = np.asarray(sh.apply({"params": head}, short_row[None].astype(np.int32), np.ones((1, 70), np.int32)))
    np.testing.assert_allclose(padded[1], single[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(CASES))
def test_config_round_trip_through_hf(name):
    scaling, max_pos = CASES[name]
    hf = hf_model(scaling, max_pos).config
    ours = LlamaConfig.from_hf(hf.to_dict())
    again = LlamaConfig.from_hf(ours.to_hf())
    assert again == ours
    reread = transformers.LlamaConfig(**ours.to_hf())  # transformers reads what we write
    assert LlamaConfig.from_hf(reread.to_dict()) == ours


def test_unknown_rope_type_is_refused():
    with pytest.raises(ValueError, match="unsupported rope_scaling type 'longrope'"):
        LlamaConfig.from_hf(dict(model_type="llama", vocab_size=8, hidden_size=8, intermediate_size=8,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 rope_scaling={"rope_type": "longrope", "factor": 2.0}))
    with pytest.raises(ValueError, match="unsupported"):
        RopeScaling(rope_type="ntk")
