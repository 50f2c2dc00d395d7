"""The scalar head (reward / value model) reads its score at each row's last real token, whatever
the padding: a left-padded batch (how samplers and PPO lay out prompts) and a right-padded one
both give every sequence's unpadded score."""
import jax
import numpy as np

from almost_jax.models.config import get_config
from almost_jax.models.llama import ScalarHeadModel, init_params


def test_scalar_at_last_real_token_of_left_and_right_padded_batches():
    cfg = get_config("tiny-gqa")
    model = ScalarHeadModel(cfg)
    params = init_params(cfg, jax.random.key(0), "scalar")
    score = jax.jit(lambda ids, mask: model.apply({"params": params}, ids, mask))
    rs = np.random.RandomState(0)
    seqs = [rs.randint(3, cfg.vocab_size, n).astype(np.int32) for n in (7, 3, 11, 7)]
    alone = np.array([float(score(s[None], np.ones((1, len(s)), np.int32))[0]) for s in seqs])
    t = 13  # every row padded, the longest by 2
    for side in ("left", "right"):
        ids = np.zeros((len(seqs), t), np.int32)
        mask = np.zeros_like(ids)
        for i, s in enumerate(seqs):
            where = slice(t - len(s), t) if side == "left" else slice(0, len(s))
            ids[i, where], mask[i, where] = s, 1
        batched = np.asarray(score(ids, mask))
        np.testing.assert_allclose(batched, alone, rtol=0, atol=2e-5, err_msg=side)
    assert len(set(np.round(alone, 4))) == len(seqs)  # distinct scores: a row mix-up would show
