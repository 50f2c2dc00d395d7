"""The PPO job end to end on tiny models: per-step metrics, and a preempted run that resumes to the
same policy as an uninterrupted one."""
import json

import jax
import numpy as np
import pytest

from almost_jax.checkpoints.load import with_score_head
from almost_jax.checkpoints.orbax_io import load_params, save_params
from almost_jax.jobs import ppo
from almost_jax.models.config import get_config
from almost_jax.models.llama import init_params
from almost_jax.train.loop import PreemptionGuard, Preempted

WORDS = ["alpha", "beta", "gamma", "delta", "red", "blue", "one", "two", "sum", "sort", "what", "is"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import sentencepiece as spm
    d = tmp_path_factory.mktemp("ppo")
    rs = np.random.RandomState(0)
    queries = [" ".join(rs.choice(WORDS, size=rs.randint(2, 6))) + "?" for _ in range(40)]
    text = [f"\n\nHuman: {q}\n\nAssistant: " + " ".join(rs.choice(WORDS, size=4)) for q in queries * 5]
    (d / "corpus.txt").write_text("\n".join(text))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=80,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
                                   add_dummy_prefix=False, split_by_whitespace=False)
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": q}) + "\n"
                                             for i, q in enumerate(queries)))
    cfg = get_config("tiny")
    policy = init_params(cfg, jax.random.key(0))
    save_params(d / "policy", policy)
    save_params(d / "rm", with_score_head(init_params(cfg, jax.random.key(1)), cfg, jax.random.key(2), 0.5))
    (d / "rm_stats.json").write_text(json.dumps({"mean": 0.1, "std": 2.0}))
    return d


def job_config(assets, workdir, steps=4):
    cfg = ppo.ppo_config()
    cfg.update(dict(workdir=str(workdir), prompts=str(assets / "prompts.jsonl"), tokenizer=str(assets / "sp.model"),
                    allow_vocab_padding=256, policy_init=str(assets / "policy"), rm_params=str(assets / "rm"),
                    rm_stats=str(assets / "rm_stats.json"), rm_max_len=48))
    cfg.policy_model.preset = cfg.rm_model.preset = "tiny"
    cfg.policy_model.dtype = cfg.rm_model.dtype = "float32"
    cfg.ppo.update(dict(steps=steps, rollout_batch_size=8, step_batch_size=4, query_len=16, response_len=8,
                        checkpoint_every=10, kl_coef=0.05, kl_controller="adaptive", kl_target=0.1))
    cfg.optimizer.update(dict(lr=1e-3, warmup_steps=0))
    return cfg


def _flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_ppo_job_logs_every_step(assets, tmp_path):
    summary = ppo.run(job_config(assets, tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("reward", "kl", "kl_coef", "entropy", "clipfrac", "approx_kl", "value_loss", "policy_loss",
                "response_length", "rollout_tokens_per_s", "train_tokens_per_s", "time_rollout_s",
                "time_scoring_s", "time_train_s"):
        assert all(np.isfinite(r[f"ppo/{key}"]) for r in rows), key
    assert rows[0]["ppo/kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout comes from the reference itself
    assert rows[-1]["ppo/kl_coef"] != rows[0]["ppo/kl_coef"]  # the adaptive controller moved
    assert summary["steps"] == 4 and (tmp_path / "run" / "params").exists()


def test_preempted_ppo_resumes_to_the_uninterrupted_policy(assets, tmp_path, monkeypatch):
    ppo.run(job_config(assets, tmp_path / "ref"))
    straight = _flat(load_params(tmp_path / "ref" / "params"))

    with monkeypatch.context() as m:  # a termination signal arrives during step 2
        m.setattr(PreemptionGuard, "requested", lambda self, ckpt, step: step == 2)
        with pytest.raises(Preempted, match="step 2"):
            ppo.run(job_config(assets, tmp_path / "cut"))
    assert not (tmp_path / "cut" / "params").exists()
    ppo.run(job_config(assets, tmp_path / "cut"))  # restarted: resumes at step 2
    resumed = _flat(load_params(tmp_path / "cut" / "params"))
    rows = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 from the resumed one
    assert straight.keys() == resumed.keys()
    for k in straight:
        np.testing.assert_allclose(resumed[k], straight[k], atol=1e-6, err_msg=k)
