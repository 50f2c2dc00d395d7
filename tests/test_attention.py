"""attention_core (the default, attention_impl="xla") has its own backward pass: it must give
attention_autodiff's values and gradients for every kind of mask the models build, and keep no
[T, S] array for the backward pass (the memory it exists to save)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almost_jax.learners.lm import make_lm_loss
from almost_jax.models.config import get_config
from almost_jax.models.layers import attention_autodiff, attention_core, attention_mask, causal_attention
from almost_jax.models.llama import CausalLM, init_params
from tests.hf_fixtures import left_padded_batch


def _inputs(t=12, s=12, heads=4, kv_heads=2, d=8, batch=3, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (batch, t, heads, d), dtype)
    k = jax.random.normal(ks[1], (batch, kv_heads, s, d), dtype)
    v = jax.random.normal(ks[2], (batch, kv_heads, s, d), dtype)
    weights = jax.random.normal(ks[3], (batch, t, heads, d), jnp.float32)
    return q, k, v, weights


def _value_and_grads(fn, q, k, v, weights, mask):
    loss = lambda q, k, v: jnp.sum(fn(q, k, v, mask).astype(jnp.float32) * weights)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _assert_grads_close(grads, ref_grads):
    for name, g, r in zip("qkv", grads, ref_grads):
        assert g.shape == r.shape and g.dtype == r.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5, rtol=1e-5, err_msg=f"d{name}")


def _masks(t):
    """Causal with left padding (row 0: its first 4 queries see no key at all), two packed
    segments (row 1), and a full row (row 2); plus queries at a few chosen slots (the reward
    model's `select`)."""
    kv_mask = jnp.ones((3, t), jnp.int32).at[0, :4].set(0).at[1, t // 2:].set(2)
    select = jnp.asarray([[t - 1, 5], [3, t - 1], [0, 7]])
    return {"causal+padding+packing": (attention_mask(jnp.arange(t), kv_mask), t),
            "selected queries": (attention_mask(select, kv_mask), 2)}


@pytest.mark.parametrize("kind", ["causal+padding+packing", "selected queries"])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_custom_backward_matches_autodiff(kind, heads, kv_heads):
    mask, t = _masks(12)[kind]
    q, k, v, weights = _inputs(t=t, s=12, heads=heads, kv_heads=kv_heads)
    ref_loss, ref_grads = _value_and_grads(attention_autodiff, q, k, v, weights, mask)
    loss, grads = _value_and_grads(attention_core, q, k, v, weights, mask)
    assert abs(float(loss - ref_loss)) < 1e-5
    _assert_grads_close(grads, ref_grads)


@pytest.mark.parametrize("block", [4, 5, 12])
def test_causal_blocks_give_the_one_block_result(block):
    """Query blocks that divide T, that do not (a short last block), and one block."""
    mask, t = _masks(12)["causal+padding+packing"]
    q, k, v, weights = _inputs(t=t, s=t, heads=4, kv_heads=2)
    ref_loss, ref_grads = _value_and_grads(attention_autodiff, q, k, v, weights, mask)
    out = jax.jit(lambda q, k, v: causal_attention(q, k, v, mask, block))(q, k, v)
    assert not np.asarray(out[0, :4]).any()  # padding queries, which see no key, get zeros
    loss, grads = _value_and_grads(lambda *a: causal_attention(*a, block=block), q, k, v, weights, mask)
    assert abs(float(loss - ref_loss)) <= 1e-6 * abs(float(ref_loss))
    _assert_grads_close(grads, ref_grads)


def test_custom_backward_matches_autodiff_in_bfloat16():
    mask, t = _masks(16)["causal+padding+packing"]
    q, k, v, weights = _inputs(t=t, s=16, d=32, dtype=jnp.bfloat16)
    _, ref_grads = _value_and_grads(attention_autodiff, q, k, v, weights, mask)
    _, grads = _value_and_grads(attention_core, q, k, v, weights, mask)
    for g, r in zip(grads, ref_grads):
        g, r = np.asarray(g, np.float32), np.asarray(r, np.float32)
        assert np.abs(g - r).max() <= 0.02 * np.abs(r).max()  # a few bf16 roundings apart


def test_backward_keeps_no_score_sized_array():
    """The residuals of attention_core's VJP: inputs, output, two [.., T, 1] row statistics and the
    boolean mask; autodiff keeps float [.., T, S] probabilities (and more), which this catches."""
    t = s = 16
    mask, _ = _masks(t)["causal+padding+packing"]
    q, k, v, _ = _inputs(t=t, s=s)

    def float_score_sized(fn):
        _, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, mask), q, k, v)
        return [x.shape for x in jax.tree.leaves(vjp)
                if x.ndim >= 2 and x.shape[-2:] == (t, s) and jnp.issubdtype(x.dtype, jnp.floating)]

    assert float_score_sized(attention_core) == []
    assert float_score_sized(attention_autodiff)  # the check can see such an array


def test_model_gradients_equal_under_either_attention():
    """The whole model through the config switch (the reward model's one-position queries are
    the "selected queries" case above)."""
    cfg = get_config("tiny-gqa")
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))
    ids, mask = left_padded_batch(cfg.vocab_size, [12, 7, 1], seed=3)
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    batch = {"input_ids": ids, "attention_mask": mask, "loss_mask": mask}
    results, programs = [], []
    for impl in ("xla", "xla_autodiff"):
        loss_fn = make_lm_loss(CausalLM(cfg.replace(attention_impl=impl)))
        grad_fn = jax.value_and_grad(lambda p: loss_fn(p, batch, None)[0])
        results.append(jax.jit(grad_fn)(params))
        programs.append(str(jax.make_jaxpr(lambda p: loss_fn(p, batch, None)[0])(params)))
    calls = [p.count("custom_vjp_call") for p in programs]  # the projections have their own VJP too
    assert calls[0] == calls[1] + cfg.num_layers  # the switch picks attention's backward
    (loss, grads), (ref_loss, ref_grads) = results
    assert abs(float(loss - ref_loss)) < 1e-6
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)))
    assert diff < 1e-6
