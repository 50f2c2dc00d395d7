"""The RL job end to end on tiny models (PPO against a tiny RM; RLOO and GRPO against a toy reward):
per-step metrics that a wrong KL sign or a one-token log-prob offset would break, rewards that rise,
preempted runs that resume to the uninterrupted policy, and the learner's log-probs against the
sampler's."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from almost_jax.checkpoints.load import with_score_head
from almost_jax.checkpoints.orbax_io import load_params, save_params
from almost_jax.data import chat
from almost_jax.data.rm_data import RewardContract
from almost_jax.jobs import ppo
from almost_jax.jobs import rl as rl_job
from almost_jax.models.config import get_config
from almost_jax.models.llama import init_params
from almost_jax.train.loop import PreemptionGuard, Preempted
from almost_jax.train.metrics import read_metrics

WORDS = ["alpha", "beta", "gamma", "delta", "red", "blue", "one", "two", "sum", "sort", "what", "is"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import sentencepiece as spm
    d = tmp_path_factory.mktemp("rl")
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
    save_params(d / "policy", init_params(cfg, jax.random.key(0)))
    save_params(d / "rm" / "params", with_score_head(init_params(cfg, jax.random.key(1)), cfg, jax.random.key(2), 0.5))
    RewardContract(max_len=48, reward_mean=0.1, reward_std=2.0, reward_stats_n=10, architecture=dataclasses.asdict(cfg),
                   tokenizer=str(d / "sp.model"), tokenizer_vocab_size=80).save(d / "rm")
    return d


def job_config(assets, workdir, algorithm="ppo", steps=4, lr=1e-3, **rl):
    cfg = rl_job.rl_config(algorithm)
    cfg.update(dict(workdir=str(workdir), prompts=str(assets / "prompts.jsonl"), tokenizer=str(assets / "sp.model"),
                    allow_vocab_padding=256, policy_init=str(assets / "policy"), rm_path=str(assets / "rm")))
    cfg.policy_model.preset, cfg.policy_model.dtype = "tiny", "float32"
    cfg.rl.update(dict(steps=steps, rollout_batch_size=8, step_batch_size=4, query_len=16, response_len=8,
                       checkpoint_every=10, kl_coef=0.05))
    if algorithm != "ppo":
        cfg.rl.samples_per_prompt = 4
    cfg.rl.update(rl)
    cfg.optimizer.update(dict(lr=lr, warmup_steps=0))
    return cfg


class ToyReward:
    """A reward the tiny policy can learn in a few steps: the fraction of a reply's characters that are 'a'."""

    def raw_scores(self, prompts, replies):
        return np.array([r.count("a") / max(len(r), 1) for r in replies], np.float32)

    def normalize(self, raw):
        return raw


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Every run builds its own jitted functions and compiles the same programs again (~30 s a run on
    2 cores, nearly all of a run's time); a persistent cache makes the later runs take seconds."""
    from jax.experimental.compilation_cache import compilation_cache as cc
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in keys}
    for k, v in zip(keys, (str(tmp_path_factory.mktemp("jax_cache")), 0, 0)):
        jax.config.update(k, v)
    cc.reset_cache()
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    cc.reset_cache()


def rows(workdir):
    return [r for r in read_metrics(workdir / "metrics.jsonl") if "rl/kl" in r]


def _flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def ppo_config(assets, workdir):
    return job_config(assets, workdir, kl_estimator="kl", kl_controller="adaptive", kl_target_per_reply=0.1)


def toy_config(assets, workdir, algorithm, kl_coef=0.0):
    return job_config(assets, workdir, algorithm, steps=8, lr=3e-2, step_batch_size=8, kl_coef=kl_coef)


@pytest.fixture(scope="module")
def ppo_run(assets, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ppo_run")
    return workdir, ppo.run(ppo_config(assets, workdir))


@pytest.fixture(scope="module")
def toy_run(assets, tmp_path_factory):
    """algorithm -> workdir of an uninterrupted run against the toy reward (run once per algorithm)."""
    done = {}

    def run(algorithm):
        if algorithm not in done:
            workdir = tmp_path_factory.mktemp(f"toy_{algorithm}")
            with pytest.MonkeyPatch.context() as m:
                m.setattr(rl_job, "load_reward_model", lambda *a, **k: ToyReward())
                done[algorithm] = workdir, rl_job.run(toy_config(assets, workdir, algorithm))
        return done[algorithm]

    return run


def test_ppo_job_logs_every_step(ppo_run):
    # k1 KL (signed): the first rollout comes from the reference itself (KL 0); after updates at lr 1e-3
    # the sampled replies are likelier under the policy than under the reference: the KL grows positive
    workdir, summary = ppo_run
    got = rows(workdir)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for key in ("reward", "kl", "kl_coef", "entropy", "clipfrac", "approx_kl", "value_loss", "policy_loss",
                "response_length", "rollout_tokens_per_s", "train_tokens_per_s", "time_rollout_s",
                "time_scoring_s", "time_train_s", "logprob_gap", "no_eos_fraction"):
        assert all(np.isfinite(r[f"rl/{key}"]) for r in got), key
    kl = [r["rl/kl"] for r in got]  # per step the k1 estimate is noisy (+-0.06 here); its drift is not
    assert kl[0] == pytest.approx(0.0, abs=1e-5) and np.mean(kl[1:]) > 0.03 and kl[-1] > 0.1, kl  # < 0 if the sign flips
    # the learner's log-probs of each rollout are the sampler's: a one-token offset gives gaps of nats
    assert all(r["rl/logprob_gap"] < 1e-3 for r in got), [r["rl/logprob_gap"] for r in got]
    assert got[-1]["rl/kl_coef"] != got[0]["rl/kl_coef"]  # the adaptive controller moved
    assert summary["steps"] == 4 and (workdir / "params").exists()


def test_preempted_ppo_resumes_to_the_uninterrupted_policy(assets, ppo_run, tmp_path, monkeypatch):
    straight = _flat(load_params(ppo_run[0] / "params"))
    with monkeypatch.context() as m:  # a termination signal arrives during step 2
        m.setattr(PreemptionGuard, "requested", lambda self, ckpt, step: step == 2)
        with pytest.raises(Preempted, match="step 2"):
            ppo.run(ppo_config(assets, tmp_path))
    assert not (tmp_path / "params").exists()
    ppo.run(ppo_config(assets, tmp_path))  # restarted: resumes at step 2, with the adaptive coefficient it had
    resumed = _flat(load_params(tmp_path / "params"))
    assert [r["step"] for r in rows(tmp_path)] == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 resumed
    assert [r["rl/kl_coef"] for r in rows(tmp_path)] == [r["rl/kl_coef"] for r in rows(ppo_run[0])]
    assert straight.keys() == resumed.keys()
    for k in straight:
        np.testing.assert_allclose(resumed[k], straight[k], atol=1e-6, err_msg=k)


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_critic_free_rl_raises_a_toy_reward(toy_run, algorithm):
    workdir, summary = toy_run(algorithm)
    got = rows(workdir)
    reward = [r["rl/reward"] for r in got]  # measured: 0.11 -> 0.21 (rloo), 0.12 -> 0.19 (grpo)
    assert np.mean(reward[-3:]) > np.mean(reward[:3]) + 0.04, reward
    assert "rl/value_loss" not in got[0] and all(r["rl/logprob_gap"] < 1e-3 for r in got)
    assert summary["algorithm"] == algorithm
    state_params = load_params(workdir / "checkpoints" / "8" / "state")["params"]
    assert set(state_params) == {"policy"}  # no value model is built or trained


def test_preempted_rloo_resumes_with_the_command_line_kl_coef(assets, toy_run, tmp_path, monkeypatch):
    """Stopped after step 1 with kl_coef 0.05 and restarted with 0.0 (a fixed controller), the run ends
    where one with 0.0 throughout does (step 1 samples from the reference itself: KL 0, so its
    coefficient changes nothing); had the checkpoint's 0.05 come back, steps 2-8 would differ."""
    reference, _ = toy_run("rloo")
    monkeypatch.setattr(rl_job, "load_reward_model", lambda *a, **k: ToyReward())
    with monkeypatch.context() as m:
        m.setattr(PreemptionGuard, "requested", lambda self, ckpt, step: step == 1)
        with pytest.raises(Preempted, match="step 1"):
            rl_job.run(toy_config(assets, tmp_path, "rloo", kl_coef=0.05))
    rl_job.run(toy_config(assets, tmp_path, "rloo", kl_coef=0.0))
    assert [r["rl/kl_coef"] for r in rows(tmp_path)] == pytest.approx([0.05] + [0.0] * 7)
    straight, resumed = _flat(load_params(reference / "params")), _flat(load_params(tmp_path / "params"))
    for k in straight:
        np.testing.assert_allclose(resumed[k], straight[k], atol=1e-6, err_msg=k)


def test_missing_eos_penalty_and_policy_snapshots(assets, tmp_path, monkeypatch):
    monkeypatch.setattr(rl_job, "load_reward_model", lambda *a, **k: ToyReward())
    summary = rl_job.run(job_config(assets, tmp_path, "rloo", steps=3, missing_eos_penalty=0.5, keep_policy_every=1,
                                    kl_budget=1e6))
    got = rows(tmp_path)
    for r in got:  # the score trained on: the RM's normalised score, minus 0.5 for each reply cut by the length limit
        assert r["rl/score"] == pytest.approx(r["rl/reward_normalized"] - 0.5 * r["rl/no_eos_fraction"], abs=1e-6)
    assert max(r["rl/no_eos_fraction"] for r in got) > 0
    # the policy each step starts from, with the KL and reward of the rollouts it sampled (logged one step later)
    index = json.loads((tmp_path / "policies" / "index.json").read_text())
    assert sorted(index) == ["1", "2"] and all((tmp_path / "policies" / f"step_{s}").is_dir() for s in index)
    for s, entry in index.items():
        row = next(r for r in got if r["step"] == int(s) + 1)
        assert entry["kl"] == row["rl/kl"] and entry["reward"] == row["rl/reward"]
    assert summary["selected_step"] == 2
    last, final = _flat(load_params(tmp_path / "policies" / "step_2")), _flat(load_params(tmp_path / "params"))
    assert not all(np.allclose(last[k], final[k]) for k in final)  # kept before step 2's update, not after it


def test_select_by_kl_budget_takes_the_last_step_within_it(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"2": {"kl": 0.1, "reward": 1.0}, "4": {"kl": 0.5, "reward": 3.0},
                                                     "6": {"kl": 0.3, "reward": 2.0}}))
    assert rl_job.select_by_kl_budget(tmp_path, 0.35)["step"] == 6  # not 4 (over budget), not the best reward
    assert json.loads((tmp_path / "selected.json").read_text())["params"] == str(tmp_path / "step_6")
    assert rl_job.select_by_kl_budget(tmp_path, 0.2)["step"] == 2
    assert rl_job.select_by_kl_budget(tmp_path, 0.05) is None


def test_learner_logprobs_equal_the_samplers(assets):
    """The sampler's log-prob of each drawn token (temperature-scaled, padded vocab rows excluded) is
    what the learner recomputes for the same rollout: same offset, temperature and vocabulary."""
    from almost_jax.data.tokenizer import load_tokenizer
    from almost_jax.learners.rl import make_scoring_fn, rollout_arrays
    from almost_jax.models.llama import CausalLM
    from almost_jax.sampling import Sampler, SamplingConfig
    cfg = get_config("tiny")
    params = init_params(cfg, jax.random.key(0))
    tok = load_tokenizer(assets / "sp.model")
    Q, R = 16, 10
    sampler = Sampler(CausalLM(cfg), params, tok, SamplingConfig(temperature=0.7, max_new_tokens=R, n=2), batch_size=3,
                      bucket=Q, max_prompt_len=Q)
    prompts = [chat.prompt_for_reply([], q) for q in ("what is alpha?", "sum one two?", "sort red blue delta?")]
    comps = list(sampler.generate(prompts, seed=3, progress=False))
    arrays = rollout_arrays([sampler.encode(p) for p in prompts for _ in range(2)], [c.token_ids for c in comps],
                            Q, R, tok.pad_id)
    old, ref, values = make_scoring_fn(CausalLM(cfg), None, Q, 0.7, tok.vocab_size)(params, params, None, arrays)
    assert values is None
    mask = arrays["response_mask"]
    assert mask.sum() > 12
    for i, c in enumerate(comps):
        n = len(c.logprobs)
        np.testing.assert_allclose(np.asarray(old)[i, :n], c.logprobs, atol=2e-4)
        assert mask[i, :n].all() and not mask[i, n:].any()
    np.testing.assert_array_equal(old, ref)


def test_kl_sign_and_penalty_at_job_level():
    """A policy moved toward a token raises the KL of replies made of that token, and the reward
    the job's estimator derives from it is penalised (the functions the job runs, end to end)."""
    from almost_jax.learners.rl import make_advantage_fn, make_scoring_fn, rollout_arrays
    from almost_jax.models.llama import CausalLM
    cfg = get_config("tiny")
    ref = init_params(cfg, jax.random.key(0))
    token = 17
    moved = jax.tree.map(lambda x: x, ref)
    moved["lm_head"]["kernel"] = ref["lm_head"]["kernel"].at[:, token].add(1.0)  # logit of `token` up everywhere
    Q, R = 4, 3
    arrays = rollout_arrays([[1, 5, 6, 7]] * 2, [[token] * 3, [token]], Q, R, 0)
    old, ref_logp, _ = make_scoring_fn(CausalLM(cfg), None, Q, 1.0)(moved, ref, None, arrays)
    m = arrays["response_mask"]
    assert np.all((np.asarray(old) - np.asarray(ref_logp))[m > 0] > 0)
    rl = rl_job.rl_config("ppo").rl
    rl.update(dict(kl_estimator="kl", whiten_rewards=False))
    adv = make_advantage_fn(rl)
    values = np.zeros((2, R), np.float32)
    _, metrics = adv(np.zeros(2, np.float32), old, ref_logp, values, m, 0.5)
    assert float(metrics["kl"]) > 0 and float(metrics["non_score_reward"]) < 0
    assert float(metrics["non_score_reward"]) == pytest.approx(-0.5 * float(metrics["kl"]), rel=1e-5)
