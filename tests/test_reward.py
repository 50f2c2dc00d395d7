"""Reward-model loss against hand-computed values, input encoding, and a training step."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from almost_jax.data.rm_data import comparison_rows, encode_for_rm
from almost_jax.learners.reward import make_reward_loss, pairwise_loss


def test_pairwise_loss_hand_computed():
    loss, m = pairwise_loss(jnp.array([1.0, 0.0, -2.0]), jnp.array([0.0, 0.0, 1.0]))
    expected = (math.log1p(math.exp(-1.0)) + math.log(2.0) + math.log1p(math.exp(3.0))) / 3
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    assert math.isclose(float(m["accuracy"]), 1 / 3, rel_tol=1e-6)
    assert math.isclose(float(m["margin"]), (1 + 0 - 3) / 3, rel_tol=1e-6)
    assert math.isclose(float(m["reward_mean"]), 0.0, abs_tol=1e-7)


class CharTok:
    eos_id, pad_id, bos_id, vocab_size = 2, 0, 1, 300

    def encode(self, text):
        return [ord(c) % 250 + 5 for c in text]


def test_encoding_left_truncates_and_appends_eos():
    tok = CharTok()
    ids = encode_for_rm(tok, "\n\nHuman: hello", "world", max_len=8)
    assert len(ids) == 8 and ids[-1] == tok.eos_id
    assert ids[:-1] == tok.encode("\n\nHuman: hello\n\nAssistant: world")[-7:]


def test_rows_drop_identical_pairs_and_right_pad():
    class C:
        def __init__(self, p, c, r):
            self.prompt, self.chosen, self.rejected = p, c, r
    rows = comparison_rows(CharTok(), [C("q", "long answer", "no"), C("q", "same", "same")], max_len=64)
    assert rows["chosen_ids"].shape[0] == 1
    assert rows["rejected_mask"][0].sum() == len("q\n\nAssistant: no") + 1
    assert rows["rejected_ids"][0, rows["rejected_mask"][0].sum():].tolist() == [0] * (
        rows["rejected_ids"].shape[1] - rows["rejected_mask"][0].sum())


def test_reward_training_step_learns_a_preference():
    from ml_collections import ConfigDict
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import ScalarHeadModel, init_params
    from almost_jax.train.optim import make_optimizer
    from almost_jax.train.state import TrainState
    from almost_jax.train.step import train_step

    cfg = get_config("tiny")
    model = ScalarHeadModel(cfg)
    rs = np.random.RandomState(0)
    chosen = rs.randint(10, 100, (8, 12)).astype(np.int32)   # "good" tokens
    rejected = rs.randint(150, 250, (8, 12)).astype(np.int32)  # "bad" tokens
    mask = np.ones_like(chosen)
    mask[:, 9:] = 0  # right padding: score read at index 8
    batch = {"chosen_ids": chosen, "chosen_mask": mask, "rejected_ids": rejected, "rejected_mask": mask}
    tx, sch = make_optimizer(ConfigDict(dict(lr=1e-3, warmup_ratio=0.0, schedule="constant")), 30)
    state = TrainState.create(init_params(cfg, jax.random.key(0), "scalar"), tx, jax.random.key_data(jax.random.key(0)))
    step = jax.jit(lambda s, b: train_step(s, b, make_reward_loss(model), sch))
    first = None
    for _ in range(30):
        state, m = step(state, batch)
        first = first if first is not None else float(m["loss"])
    assert float(m["loss"]) < 0.5 * first and float(m["accuracy"]) == 1.0
