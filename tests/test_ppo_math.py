"""PPO math against hand-computed values and a plain numpy reference on random masked inputs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almost_jax.learners import ppo_math as P


def np_gae(r, v, m, gamma, lam):
    b, t = r.shape
    adv = np.zeros_like(r)
    for i in range(b):
        last = 0.0
        n = int(m[i].sum())
        for j in reversed(range(n)):
            nv = v[i, j + 1] if j + 1 < n else 0.0
            delta = r[i, j] + gamma * nv - v[i, j]
            last = delta + gamma * lam * last
            adv[i, j] = last
    return adv, (adv + v) * m


def random_batch(seed, b=5, t=9):
    rs = np.random.RandomState(seed)
    lengths = rs.randint(1, t + 1, b)
    m = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    return rs, m, rs.randn(b, t).astype(np.float32), rs.randn(b, t).astype(np.float32)


def test_gae_hand_computed():
    # rewards [1, 0, 2], values [0.5, 0.2, 0.1], gamma 0.9, lam 0.8, value after the end = 0
    # deltas: d2 = 2 - 0.1 = 1.9; d1 = 0 + 0.9*0.1 - 0.2 = -0.11; d0 = 1 + 0.9*0.2 - 0.5 = 0.68
    # A2 = 1.9; A1 = -0.11 + 0.72*1.9 = 1.258; A0 = 0.68 + 0.72*1.258 = 1.58576
    adv, ret = P.gae(jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[0.5, 0.2, 0.1]]), jnp.ones((1, 3)), 0.9, 0.8)
    np.testing.assert_allclose(adv[0], [1.58576, 1.258, 1.9], rtol=1e-5)
    np.testing.assert_allclose(ret[0], [2.08576, 1.458, 2.0], rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95)])
def test_gae_matches_numpy_with_masks(seed, gamma, lam):
    _, m, r, v = random_batch(seed)
    adv, ret = jax.jit(P.gae, static_argnums=(3, 4))(r * m, v, m, gamma, lam)
    ref_adv, ref_ret = np_gae(r * m, v * m, m, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, atol=1e-5)
    assert np.all(np.asarray(adv)[m == 0] == 0)


def test_kl_estimators_hand_and_numpy():
    logp, ref = jnp.array([[-1.0, -2.0]]), jnp.array([[-1.5, -1.0]])
    np.testing.assert_allclose(P.kl_per_token("kl", logp, ref), [[0.5, -1.0]])
    np.testing.assert_allclose(P.kl_per_token("clamped", logp, ref), [[0.5, 0.0]])
    np.testing.assert_allclose(P.kl_per_token("abs", logp, ref), [[0.5, 1.0]])
    np.testing.assert_allclose(P.kl_per_token("mse", logp, ref), [[0.125, 0.5]])
    # k3 = (r - 1) - log r with r = exp(ref - logp): r = e^-0.5 and e^1
    np.testing.assert_allclose(P.kl_per_token("k3", logp, ref),
                               [[math.exp(-0.5) - 1 + 0.5, math.e - 1 - 1]], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        P.kl_per_token("nope", logp, ref)
    rs = np.random.RandomState(0)
    a, b = rs.randn(4, 6), rs.randn(4, 6)
    np.testing.assert_allclose(P.kl_per_token("k3", a, b), np.exp(b - a) - 1 - (b - a), rtol=1e-5)


def test_shape_rewards_score_on_last_real_token():
    kl = jnp.array([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards, non_score = P.shape_rewards(jnp.array([2.0, -1.0]), kl, mask, kl_coef=0.5)
    np.testing.assert_allclose(non_score, [[-0.05, -0.1, -0.15], [-0.25, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(rewards, [[-0.05, -0.1, 1.85], [-1.25, 0.0, 0.0]], rtol=1e-6)
    clipped, _ = P.shape_rewards(jnp.array([5.0, -1.0]), kl * 0, mask, 0.0, score_clip=1.0)
    assert float(clipped[0, 2]) == 1.0
    np.testing.assert_allclose(P.normalize_scores(jnp.array([3.0]), 1.0, 2.0), [1.0], rtol=1e-6)


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_masked(shift_mean):
    _, m, x, _ = random_batch(3)
    got = np.asarray(P.whiten(x, m, shift_mean))
    vals = x[m > 0]
    ref = (x - vals.mean()) / (vals.std() + 1e-8) + (0 if shift_mean else vals.mean())
    np.testing.assert_allclose(got[m > 0], ref[m > 0], rtol=1e-4, atol=1e-5)
    assert np.all(got[m == 0] == 0)


def test_policy_loss_clipping_hand_computed():
    # ratios e^0.5=1.6487 (A=+1: clipped at 1.2 -> loss -1.2, clipped), e^-0.5=0.6065 (A=+1: unclipped
    # min -> max(-0.6065, -0.8) = -0.6065, not clipped), e^-0.5 with A=-1: max(0.6065, 0.8) = 0.8 (clipped)
    logp = jnp.array([[0.5, -0.5, -0.5, 0.0]])
    adv = jnp.array([[1.0, 1.0, -1.0, 7.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    loss, m = P.policy_loss(logp, jnp.zeros_like(logp), adv, mask, clip=0.2)
    np.testing.assert_allclose(loss, (-1.2 - math.exp(-0.5) + 0.8) / 3, rtol=1e-5)
    np.testing.assert_allclose(m["clipfrac"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(m["approx_kl"], 0.5 * (0.25 * 3) / 3, rtol=1e-6)


def test_value_loss_hand_computed():
    # v=2, old=1, R=3, clip 0.2: vclip=1.2 -> max((2-3)^2=1, (1.2-3)^2=3.24) = 3.24 (clipped)
    # v=1, old=1, R=1.1: both 0.01
    loss, m = P.value_loss(jnp.array([[2.0, 1.0]]), jnp.array([[1.0, 1.0]]), jnp.array([[3.0, 1.1]]),
                           jnp.ones((1, 2)), 0.2)
    np.testing.assert_allclose(loss, 0.5 * (3.24 + 0.01) / 2, rtol=1e-5)
    np.testing.assert_allclose(m["vf_clipfrac"], 0.5)


def test_entropy():
    logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    np.testing.assert_allclose(P.entropy_from_logits(logits, jnp.array([[1.0, 0.0]])), math.log(2), rtol=1e-6)


def test_kl_controllers():
    assert P.KLController("fixed").update(0.0067, kl=100.0) == 0.0067
    af = P.KLController("adaptive", target=6.0, k_beta=0.1)
    # kl 12 -> e = clip(1, .2) = 0.2 -> coef * 1.02 ; kl 3 -> e = -0.5 -> -0.2 -> coef * 0.98
    assert math.isclose(af.update(0.1, 12.0), 0.102) and math.isclose(af.update(0.1, 3.0), 0.098)
    assert math.isclose(af.update(0.1, 6.6), 0.1 * (1 + 0.1 * 0.1))
    trl = P.KLController("adaptive", target=6.0, horizon=10000, update_rule="trl")
    assert math.isclose(trl.update(0.2, 12.0, n_steps=256), 0.2 * (1 + 0.2 * 256 / 10000))
    with pytest.raises(ValueError):
        P.KLController("bogus").update(0.1, 1.0)
