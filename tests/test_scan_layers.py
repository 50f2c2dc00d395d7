"""Scanned decoder layers (stacked params) and remat policies: both layouts give the same logits,
grads and KV-cache decode; HF conversion to and from the stacked layout; checkpoints load into
either layout; the policy names mean what they say."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from almost_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.orbax_io import save_params
from almost_jax.config_lib import llama_config, model_block
from almost_jax.learners.lm import make_lm_loss
from almost_jax.models.config import get_config
from almost_jax.models.llama import (CausalLM, ScalarHeadModel, init_cache, init_params, positions_from_mask,
                                     stack_layers, unstack_layers)
from almost_jax.sampling import SamplingConfig, make_generate_fn
from tests.hf_fixtures import left_padded_batch, save_tiny_llama
from tests.multidevice import run_with_devices

SCAN = dict(scan_layers=True)


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny-gqa")
    return cfg, jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))


def test_stacked_param_layout(tiny):
    cfg, params = tiny
    stacked = jax.jit(init_params, static_argnums=0)(cfg.replace(**SCAN), jax.random.key(0))
    assert "layers" in stacked["model"] and "layers_0" not in stacked["model"]
    assert stacked["model"]["layers"]["self_attn"]["q_proj"]["kernel"].shape == (cfg.num_layers, 64, 4, 16)
    assert jax.tree.structure(stack_layers(params)) == jax.tree.structure(stacked)
    back = unstack_layers(stack_layers(params))
    assert jax.tree.structure(back) == jax.tree.structure(params) and _max_diff(back, params) == 0


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_scanned_logits_match_transformers(tmp_path, kind):
    path, hf = save_tiny_llama(tmp_path / kind, kind=kind, seed=1)
    cfg, params = load_hf_checkpoint(path, llama_config(model_block(hf_path=str(path), scan_layers=True)))
    assert cfg.scan_layers and params["model"]["layers"]["mlp"]["up_proj"]["kernel"].shape[0] == cfg.num_layers
    ids, mask = left_padded_batch(cfg.vocab_size, [17, 9, 1], seed=2)
    pos = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(pos)).logits.numpy()
    got, _ = CausalLM(cfg).apply({"params": params}, ids.astype(np.int32), mask.astype(np.int32))
    assert np.abs(np.asarray(got) - ref)[mask.astype(bool)].max() <= 1e-4


@pytest.mark.parametrize("policy", ["none", "full"])  # the others: see the jaxpr test below
def test_unrolled_and_scanned_give_same_logits_and_grads(tiny, policy):
    cfg, params = tiny
    ids, mask = left_padded_batch(cfg.vocab_size, [12, 7], seed=3)
    batch = {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask, jnp.int32),
             "loss_mask": jnp.asarray(mask, jnp.int32)}
    results = {}
    for name, c, p in [("unrolled", cfg.replace(remat_policy=policy), params),
                       ("scan", cfg.replace(remat_policy=policy, **SCAN), stack_layers(params))]:
        logits, _ = jax.jit(CausalLM(c).apply)({"params": p}, batch["input_ids"], batch["attention_mask"])
        loss, grads = jax.jit(jax.value_and_grad(lambda q: make_lm_loss(CausalLM(c))(q, batch, None)[0]))(p)
        results[name] = (logits, loss, grads if name == "unrolled" else unstack_layers(grads))
    (l1, loss1, g1), (l2, loss2, g2) = results["unrolled"], results["scan"]
    assert _max_diff(l1, l2) < 1e-5 and abs(float(loss1 - loss2)) < 1e-6
    assert jax.tree.structure(g1) == jax.tree.structure(g2) and _max_diff(g1, g2) < 1e-6


def test_remat_policy_changes_what_the_backward_recomputes(tiny):
    """Matmuls in the gradient's program: every policy but "none" recomputes some of the forward
    pass; "dots_saveable" keeps all matmul results (nothing to redo), the no-batch-dims variant
    redoes attention's two batched matmuls per layer, "full" redoes every matmul whose result the
    backward pass reads."""
    cfg, params = tiny
    ids = jnp.ones((1, 8), jnp.int32)
    batch = {"input_ids": ids, "attention_mask": ids, "loss_mask": ids}

    def dots(**kw):
        c = cfg.replace(**kw)
        p = params if not c.scan_layers else stack_layers(params)
        return str(jax.make_jaxpr(jax.grad(lambda q: make_lm_loss(CausalLM(c))(q, batch, None)[0]))(p)).count(
            "dot_general")

    for kw in ({}, SCAN):
        layers = 1 if kw else cfg.num_layers  # a scanned program holds one layer's code
        none = dots(**kw)
        assert dots(remat_policy="dots_saveable", **kw) == none
        assert dots(remat_policy="dots_with_no_batch_dims_saveable", **kw) == none + 2 * layers
        assert dots(remat_policy="full", **kw) == none + 8 * layers  # all 9 but down_proj (output unused)
    assert dots(remat=True) == dots(remat_policy="full")  # the older boolean spelling


def test_remat_policy_names_are_checked():
    with pytest.raises(ValueError, match="remat_policy must be one of .*'dots_saveable'.*got 'dots'"):
        get_config("tiny", remat_policy="dots")
    cfg = llama_config(model_block(remat_policy="dots_saveable", scan_layers=True))
    assert cfg.layer_remat == "dots_saveable" and cfg.scan_layers
    assert llama_config(model_block(remat=True)).layer_remat == "full"
    assert llama_config(model_block()).layer_remat == "none" and not llama_config(model_block()).scan_layers


def test_stacked_hf_round_trip_is_exact(tmp_path):
    path, hf = save_tiny_llama(tmp_path / "in", kind="gqa", seed=5)
    cfg, params = load_hf_checkpoint(path, llama_config(model_block(hf_path=str(path), scan_layers=True)))
    out = save_hf_checkpoint(params, cfg, tmp_path / "out")
    from safetensors.numpy import load_file
    got = load_file(str(out / "model.safetensors"))
    ref = {k: v.numpy() for k, v in hf.state_dict().items()}
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    # the export reads back in the other layout, too
    _, unrolled = load_hf_checkpoint(out)
    assert _max_diff(stack_layers(unrolled), params) == 0


@pytest.mark.parametrize("stored_scan,model_scan", [(False, True), (True, False)])
def test_params_dir_loads_into_either_layout(tmp_path, tiny, stored_scan, model_scan, monkeypatch):
    cfg, params = tiny
    save_params(tmp_path / "params", stack_layers(params) if stored_scan else params)
    monkeypatch.chdir(tmp_path)  # a relative path, as the pipeline's workdir is
    got = load_model_params("params", cfg.replace(scan_layers=model_scan))
    want = stack_layers(params) if model_scan else params
    assert jax.tree.structure(got) == jax.tree.structure(want) and _max_diff(got, want) == 0


def test_kv_cache_decode_scanned_equals_unrolled(tiny):
    cfg, params = tiny
    scfg = cfg.replace(**SCAN)
    cache = init_cache(scfg, 3, 20)
    assert len(cache) == 2 and cache[0].shape == (3, cfg.num_layers, cfg.kv_heads, 20, cfg.dim_per_head)
    ids, mask = left_padded_batch(cfg.vocab_size, [9, 5, 2], seed=1)
    sampling = SamplingConfig(temperature=1.0, top_k=20, max_new_tokens=8, n=2)
    outs = [make_generate_fn(CausalLM(c), sampling, eos_id=10**6, pad_id=0)(
        p, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(7))
        for c, p in [(cfg, params), (scfg, stack_layers(params))]]
    np.testing.assert_array_equal(np.asarray(outs[0]["tokens"]), np.asarray(outs[1]["tokens"]))
    np.testing.assert_allclose(np.asarray(outs[0]["logprobs"]), np.asarray(outs[1]["logprobs"]), atol=1e-5)
    # the scanned cache's decode equals a full re-forward of the sequence
    tokens = np.concatenate([ids, np.asarray(outs[1]["tokens"])[::2]], axis=1)
    full, _ = CausalLM(scfg).apply({"params": stack_layers(params)}, tokens.astype(np.int32),
                                   np.concatenate([mask, np.ones((3, 8), mask.dtype)], 1).astype(np.int32))
    logp = jax.nn.log_softmax(full[:, ids.shape[1] - 1:-1], -1)
    picked = np.take_along_axis(np.asarray(logp), tokens[:, ids.shape[1]:, None], -1)[..., 0]
    np.testing.assert_allclose(picked, np.asarray(outs[1]["logprobs"])[::2], atol=1e-4)


SHARDED = """
import numpy as np, jax
from almost_jax.checkpoints.hf import load_hf_checkpoint, load_hf_config
from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.orbax_io import save_params
from almost_jax.models.llama import param_shardings, stack_layers
from almost_jax.parallel import DEFAULT_RULES, MeshConfig, make_mesh
cfg = load_hf_config("{path}").replace(scan_layers=True)
mesh = make_mesh(MeshConfig(1, 4, 2))
sh = param_shardings(cfg, mesh, DEFAULT_RULES)
_, ref = load_hf_checkpoint("{path}")  # unrolled, on the host
_, params = load_hf_checkpoint("{path}", cfg, shardings=sh)
q = params["model"]["layers"]["self_attn"]["q_proj"]["kernel"]
assert q.sharding == sh["model"]["layers"]["self_attn"]["q_proj"]["kernel"], q.sharding
assert q.sharding.spec[0] is None and "tensor" in str(q.sharding.spec), q.sharding.spec
for a, b in zip(jax.tree.leaves(stack_layers(ref)), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
save_params("{tmp}/unrolled", ref)  # an unrolled params dir, restored sharded into the scanned layout
got = load_model_params("{tmp}/unrolled", cfg, shardings=sh)
for (a, b), s in zip(zip(jax.tree.leaves(stack_layers(ref)), jax.tree.leaves(got)), jax.tree.leaves(sh)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert b.sharding == s
print("SHARDED_OK")
"""


def test_sharded_loads_into_the_stacked_layout(tmp_path):
    path, _ = save_tiny_llama(tmp_path / "m", kind="gqa")
    assert "SHARDED_OK" in run_with_devices(8, SHARDED.format(path=path, tmp=tmp_path))


@pytest.mark.parametrize("scan", [False, True])
def test_reward_score_at_last_token_equals_full_then_gather(tiny, scan):
    """The scalar head computes its last layer only at the read position; scores and grads are
    those of the full computation read there (left and right padding)."""
    cfg, params = tiny
    cfg = cfg.replace(scan_layers=scan)
    head = jax.random.normal(jax.random.key(1), (cfg.hidden_size, 1))
    p = {"model": (stack_layers(params) if scan else params)["model"], "score_head": {"kernel": head}}
    ids = jnp.asarray(np.random.RandomState(0).randint(3, 256, (3, 10)), jnp.int32)
    mask = jnp.asarray([[1] * 10, [1] * 6 + [0] * 4, [0] * 3 + [1] * 7], jnp.int32)
    model = ScalarHeadModel(cfg)
    from almost_jax.models.llama import last_token_index
    idx = last_token_index(mask)[:, None]

    def full(q):
        return jnp.take_along_axis(model.apply({"params": q}, ids, mask, reduce="none"), idx, 1)[:, 0]

    def last(q):
        return model.apply({"params": q}, ids, mask)

    assert _max_diff(jax.jit(full)(p), jax.jit(last)(p)) < 1e-5
    w = jnp.array([1.0, -2.0, 0.5])
    grads = [jax.jit(jax.grad(lambda q, f=f: f(q) @ w))(p) for f in (full, last)]
    assert _max_diff(*grads) < 1e-4
