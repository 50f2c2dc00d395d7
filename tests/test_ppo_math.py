"""On-policy RL math (PPO, RLOO, GRPO) and the registered estimators and losses, against hand-computed
values and a plain numpy reference on random masked inputs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_collections import ConfigDict

from almost_jax.learners import ppo_math as P
from almost_jax.learners import rl


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
    assert P.KLController("fixed").update(0.0067, kl_per_reply=100.0) == 0.0067
    af = P.KLController("adaptive", target_per_reply=6.0, k_beta=0.1)
    # kl 12 -> e = clip(1, .2) = 0.2 -> coef * 1.02 ; kl 3 -> e = -0.5 -> -0.2 -> coef * 0.98
    assert math.isclose(af.update(0.1, 12.0), 0.102) and math.isclose(af.update(0.1, 3.0), 0.098)
    assert math.isclose(af.update(0.1, 6.6), 0.1 * (1 + 0.1 * 0.1))
    trl = P.KLController("adaptive", target_per_reply=6.0, horizon=10000, update_rule="trl")
    assert math.isclose(trl.update(0.2, 12.0, n_steps=256), 0.2 * (1 + 0.2 * 256 / 10000))
    with pytest.raises(ValueError):
        P.KLController("bogus").update(0.1, 1.0)


# ----- RLOO / GRPO and the registries -----

def rl_cfg(**kw):
    base = dict(algorithm="ppo", samples_per_prompt=3, rollout_batch_size=6, step_batch_size=3, grpo_std_normalize=True,
                grpo_length_normalize=True, gamma=1.0, lam=1.0, whiten_rewards=False, score_clip=0.0, cliprange=0.2)
    return ConfigDict({**base, **kw})


def test_rloo_leave_one_out_hand_computed():
    # group [1, 2, 6]: 1 - (2+6)/2 = -3, 2 - (1+6)/2 = -1.5, 6 - (1+2)/2 = 4.5; group [0, 3, 3]: -3, 1.5, 1.5
    np.testing.assert_allclose(P.rloo_advantages(jnp.array([1.0, 2, 6, 0, 3, 3]), 3), [-3, -1.5, 4.5, -3, 1.5, 1.5])
    # the estimator: sequence reward = score - kl_coef * KL summed over the reply: [1 - 0.5, 2 - 0, 6 - 1] =
    # [0.5, 2, 5] -> 0.5 - 3.5 = -3, 2 - 2.75 = -0.75, 5 - 1.25 = 3.75, on every real token
    kl = jnp.array([[0.5, 0.5], [0.0, 0.0], [2.0, 0.0]])
    mask = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    out, m = rl.ADVANTAGE_ESTIMATORS["rloo"](jnp.array([1.0, 2.0, 6.0]), kl, None, mask, 0.5, rl_cfg())
    np.testing.assert_allclose(out["advantages"], [[-3, -3], [-0.75, -0.75], [3.75, 0]], rtol=1e-6)
    np.testing.assert_allclose(m["non_score_reward"], -0.5 * 3 / 3, rtol=1e-6)


def test_grpo_group_normalised_hand_computed():
    # group [1, 2, 6]: mean 3, deviations [-2, -1, 3], std (n-1) = sqrt(14 / 2) = sqrt(7)
    s7 = math.sqrt(7.0)
    got = P.grpo_advantages(jnp.array([1.0, 2.0, 6.0]), 3)
    np.testing.assert_allclose(got, [-2 / (s7 + 1e-4), -1 / (s7 + 1e-4), 3 / (s7 + 1e-4)], rtol=1e-6)
    np.testing.assert_allclose(P.grpo_advantages(jnp.array([1.0, 2.0, 6.0]), 3, std_normalize=False), [-2, -1, 3])
    # the estimator ignores the KL (GRPO puts it in the loss) and repeats A on every real token
    mask = jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    out, _ = rl.ADVANTAGE_ESTIMATORS["grpo"](jnp.array([1.0, 2.0, 6.0]), jnp.ones((3, 2)) * 9, None, mask, 0.5,
                                             rl_cfg(grpo_std_normalize=False))
    np.testing.assert_allclose(out["advantages"], [[-2, -2], [-1, 0], [3, 3]])


def test_gae_estimator_hand_computed():
    # reward [-0.5*0.1, -0.5*0.2 + 2] = [-0.05, 1.9]; values [0.5, 0.25], gamma = lam = 1:
    # d1 = 1.9 - 0.25 = 1.65, d0 = -0.05 + 0.25 - 0.5 = -0.3 -> A = [1.35, 1.65], returns A + V = [1.85, 1.9];
    # advantages whitened: mean 1.5, std 0.15 -> [-1, 1]
    out, m = rl.ADVANTAGE_ESTIMATORS["gae"](jnp.array([2.0]), jnp.array([[0.1, 0.2]]), jnp.array([[0.5, 0.25]]),
                                            jnp.ones((1, 2)), 0.5, rl_cfg())
    np.testing.assert_allclose(out["returns"], [[1.85, 1.9]], rtol=1e-6)
    np.testing.assert_allclose(out["advantages"], [[-1.0, 1.0]], rtol=1e-5)
    np.testing.assert_allclose(m["non_score_reward"], -0.15, rtol=1e-6)


def test_reinforce_loss_hand_computed():
    # ratio e^0.2 = 1.2214 with A = 2: max(-2.4428, -2.4) = -2.4 (clipped); ratio 1 with A = -1: 1 -> mean -0.7
    seq, old, adv = jnp.array([-1.0, -2.0]), jnp.array([-1.2, -2.0]), jnp.array([2.0, -1.0])
    loss, m = P.sequence_policy_loss(seq, old, adv, 0.2)
    np.testing.assert_allclose(loss, -0.7, rtol=1e-6)
    np.testing.assert_allclose(m["clipfrac"], 0.5)
    # on the rollout's own policy (ratio 1) the gradient is REINFORCE's: d/d log p(y_i) = -A_i / B
    np.testing.assert_allclose(jax.grad(lambda s: P.sequence_policy_loss(s, old, adv, 0.2)[0])(old), [-1.0, 0.5])
    # the registered loss sums token log-probs over real tokens and reads the per-sequence advantage
    batch = {"old_logp": jnp.array([[-0.7, -0.5, 0.0], [-2.0, 0.0, 0.0]]), "advantages": jnp.array([[2.0, 2.0, 0], [-1, 0, 0]]),
             "response_mask": jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])}
    logp = jnp.array([[-0.6, -0.4, -5.0], [-2.0, -3.0, -3.0]])  # padding log-probs must not count
    loss, _ = rl.POLICY_LOSSES["reinforce"](logp, batch, rl_cfg())
    np.testing.assert_allclose(loss, -0.7, rtol=1e-6)


def test_grpo_loss_hand_computed():
    # row 0: ratio 1, A 0.5, k3 at token 0: e^-0.5 + 0.5 - 1 = 0.10653, token 1: 0 -> per token
    # [-0.5 + 0.1 * 0.10653, -0.5], row mean -0.49467; row 1: one token, A -1 -> +1. GRPO: mean of row
    # means = 0.25266; Dr. GRPO: masked sum / (2 rows x 3 tokens) = (-0.98935 + 1) / 6
    logp = jnp.array([[-1.0, -2.0, -9.0], [-0.3, -9.0, -9.0]])
    ref = jnp.array([[-1.5, -2.0, 0.0], [-0.3, 0.0, 0.0]])
    adv = jnp.array([[0.5, 0.5, 0.0], [-1.0, 0.0, 0.0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    k3 = math.exp(-0.5) + 0.5 - 1
    loss, m = P.grpo_policy_loss(logp, logp, ref, adv, mask, 0.2, 0.1)
    np.testing.assert_allclose(loss, ((-0.5 + 0.1 * k3 - 0.5) / 2 + 1) / 2, rtol=1e-5)
    np.testing.assert_allclose(m["kl_loss"], k3 / 3, rtol=1e-5)
    dr, _ = P.grpo_policy_loss(logp, logp, ref, adv, mask, 0.2, 0.1, length_normalize=False)
    np.testing.assert_allclose(dr, (-1.0 + 0.1 * k3 + 1) / 6, rtol=1e-4)
    batch = {"old_logp": logp, "ref_logp": ref, "advantages": adv, "response_mask": mask, "kl_coef": jnp.full(2, 0.1)}
    np.testing.assert_allclose(rl.POLICY_LOSSES["grpo"](logp, batch, rl_cfg())[0], loss, rtol=1e-6)


def test_algorithms_are_registered_and_checked():
    assert set(rl.ADVANTAGE_ESTIMATORS) == {"gae", "rloo", "grpo"}
    assert set(rl.POLICY_LOSSES) == {"ppo_clip", "reinforce", "grpo"}
    assert rl.algorithm(rl_cfg(algorithm="ppo", samples_per_prompt=1)).value_model
    assert not rl.algorithm(rl_cfg(algorithm="rloo")).value_model
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        rl.algorithm(rl_cfg(algorithm="grpo", samples_per_prompt=1))
    with pytest.raises(ValueError, match="multiple of"):
        rl.algorithm(rl_cfg(algorithm="rloo", samples_per_prompt=4))
    with pytest.raises(ValueError, match="rl.algorithm must be"):
        rl.algorithm(rl_cfg(algorithm="dpo"))
