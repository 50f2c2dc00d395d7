"""The chunked LM head + cross entropy (models.lm_head, CausalLM.token_loss) used by the LM loss:
the loss and the grads of every param equal the plain logits -> log-softmax path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almost_jax.learners.lm import make_lm_loss, masked_lm_loss, next_token_targets
from almost_jax.models.config import get_config
from almost_jax.models.lm_head import head_cross_entropy, num_chunks_for
from almost_jax.models.llama import CausalLM, init_params


def test_next_token_targets_align_with_the_predicting_position():
    ids = jnp.array([[5, 6, 7, 8]])
    mask = jnp.array([[0, 1, 1, 0]])
    targets, weights = next_token_targets(ids, mask)
    np.testing.assert_array_equal(targets, [[6, 7, 8, 0]])
    np.testing.assert_array_equal(weights, [[1.0, 1.0, 0.0, 0.0]])


@pytest.mark.parametrize("tie", [False, True])
def test_loss_and_grads_equal_the_plain_logits_path(tie):
    cfg = get_config("tiny").replace(tie_word_embeddings=tie)
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))
    rs = np.random.RandomState(0)
    batch = {"input_ids": jnp.asarray(rs.randint(3, cfg.vocab_size, (3, 16)), jnp.int32),
             "attention_mask": jnp.ones((3, 16), jnp.int32),
             "loss_mask": jnp.asarray(rs.randint(0, 2, (3, 16)), jnp.int32)}
    model = CausalLM(cfg)

    def plain(p):
        logits, _ = model.apply({"params": p}, batch["input_ids"], batch["attention_mask"])
        return masked_lm_loss(logits, batch["input_ids"], batch["loss_mask"])[0]

    ref_loss, ref_grads = jax.jit(jax.value_and_grad(plain))(params)
    loss, grads = jax.jit(jax.value_and_grad(lambda p: make_lm_loss(model)(p, batch, None)[0]))(params)
    assert abs(float(loss - ref_loss)) < 1e-6
    for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
    # the eval path (no grad) is the same number
    assert abs(float(jax.jit(lambda p: make_lm_loss(model)(p, batch, None)[0])(params) - ref_loss)) < 1e-6


@pytest.mark.parametrize("chunks", [1, 2, 8])
def test_chunking_does_not_change_the_result(chunks):
    rs = np.random.RandomState(1)
    hidden = jnp.asarray(rs.randn(2, 8, 16), jnp.float32)
    kernel = jnp.asarray(rs.randn(16, 50) * 0.3, jnp.float32)
    targets = jnp.asarray(rs.randint(0, 50, (2, 8)), jnp.int32)
    weights = jnp.asarray(rs.rand(2, 8), jnp.float32)

    def plain(h, k):
        logp = jax.nn.log_softmax(h @ k, -1)
        return -jnp.sum(jnp.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights)

    def fused(h, k):
        return 3.0 * head_cross_entropy(h, k, targets, weights, chunks)  # a cotangent other than 1

    ref = jax.value_and_grad(lambda h, k: 3.0 * plain(h, k), argnums=(0, 1))(hidden, kernel)
    got = jax.value_and_grad(fused, argnums=(0, 1))(hidden, kernel)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    for a, b in zip(ref[1], got[1]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)


def test_num_chunks_bounds_the_logits():
    assert num_chunks_for(4, 512, 32000) == 4  # 4 x 128 tokens x 32000 = 16.4M floats <= 2**24
    assert num_chunks_for(1, 16, 256) == 1
    assert num_chunks_for(64, 7, 128256) == 7  # as many as the (prime) length allows
