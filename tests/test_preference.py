"""DPO / cDPO / IPO, SPA's labelling and self-refinement, CUT's token selection and loss, against
values computed by hand; and the three learners on a tiny model through the shared trainer."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almost_jax.data.schemas import ComparisonRecord, JudgmentRecord, Provenance
from almost_jax.learners import cut, preference, spa
from almost_jax.miniworld import oracle


# ----- DPO family -----

PC, PR = jnp.array([-1.0, -2.0]), jnp.array([-3.0, -1.0])  # policy log-probs of chosen / rejected: [2, -1]
RC, RR = jnp.array([-1.5, -1.5]), jnp.array([-2.5, -1.5])  # reference [1, 0]: h = [1, -1]
SP_POS, SP_NEG = math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(0.5))  # -log s(0.5), -log s(-0.5)


def test_dpo_sigmoid_loss_and_rewards_by_hand():
    losses, r_w, r_l = preference.dpo_losses(PC, PR, RC, RR, beta=0.5)
    np.testing.assert_allclose(losses, [0.474077, 0.974077], atol=1e-6)
    np.testing.assert_allclose(losses, [SP_POS, SP_NEG], atol=1e-6)
    np.testing.assert_allclose(r_w, [0.25, -0.25], atol=1e-6)  # beta * (pi - ref) of chosen
    np.testing.assert_allclose(r_l, [-0.25, 0.25], atol=1e-6)


def test_cdpo_label_smoothing_by_hand():
    losses, _, _ = preference.dpo_losses(PC, PR, RC, RR, beta=0.5, label_smoothing=0.1)
    np.testing.assert_allclose(losses, [0.9 * SP_POS + 0.1 * SP_NEG, 0.9 * SP_NEG + 0.1 * SP_POS], atol=1e-6)
    np.testing.assert_allclose(losses, [0.524077, 0.924077], atol=1e-6)
    per_pair, _, _ = preference.dpo_losses(PC, PR, RC, RR, beta=0.5, label_smoothing=jnp.array([0.0, 0.1]))
    np.testing.assert_allclose(per_pair, [SP_POS, 0.924077], atol=1e-6)


def test_ipo_loss_by_hand():
    losses, _, _ = preference.dpo_losses(PC, PR, RC, RR, beta=0.5, loss="ipo")
    np.testing.assert_allclose(losses, [0.0, 4.0], atol=1e-6)  # (h - 1/(2 beta))^2 with 1/(2 beta) = 1
    with pytest.raises(ValueError, match="dpo.loss"):
        preference.dpo_losses(PC, PR, RC, RR, beta=0.5, loss="hinge")


def test_dpo_config_checks():
    from almost_jax.jobs.preference_config import dpo_block
    for bad, match in ((dict(label_smoothing=0.5), "label_smoothing"), (dict(loss="ipo", label_smoothing=0.1), "IPO"),
                       (dict(beta=0.0), "beta"), (dict(reference="cached"), "reference")):
        with pytest.raises(ValueError, match=match):
            preference.check_dpo_config(dpo_block(**bad))


# ----- SPA -----

def test_spa_labels_by_implicit_reward():
    policy = np.array([[-3.0, -5.0, -4.0], [-2.0, -2.0, -2.0], [-6.0, -1.0, -3.0], [-1.0, -2.0, -3.0]])
    ref = np.array([[-4.0, -4.5, -4.2], [-2.0, -2.0, -2.0], [-5.0, -3.0, -3.0], [-1.0, -2.0, -3.0]])
    rewards = spa.implicit_rewards(policy, ref)
    np.testing.assert_allclose(rewards[0], [1.0, -0.5, 0.2])
    np.testing.assert_allclose(rewards[2], [-1.0, 2.0, 0.0])
    replies = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"], ["same", "x", "same"]]
    rewards[3] = [0.5, 0.1, -0.2]  # the extremes are the same text: no pair
    pairs = spa.label_by_implicit_reward(["p0", "p1", "p2", "p3"], replies, rewards)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("p0", "a", "b"), ("p2", "h", "g")]  # p1 all tie
    assert pairs[0].provenance.filters["reward_gap"] == 1.5


def test_spa_threshold_and_refined_smoothing_by_hand():
    margins = jnp.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 9.0, 8.0, 7.0, 6.0])
    # sorted 0..9; k = int(10 * 0.1) = 1 -> tau = (1 + 2) / 2
    assert float(spa.confidence_threshold(margins, 0.1)) == 1.5
    eps = spa.refined_smoothing(margins, 0.1, 0.1)
    np.testing.assert_allclose(eps, [0, 0.1, 0, 0, 0, 0.1, 0, 0, 0, 0], atol=1e-7)
    assert float(spa.confidence_threshold(margins, 0.3)) == 3.5  # k = 3: (3 + 4) / 2
    np.testing.assert_allclose(spa.refine_alpha_column(np.arange(5), 5, 0.1, 0.2), [0, 0.1, 0.1, 0.1, 0.1], atol=1e-7)
    # per row alpha from the batch (0 in warm-up); n = 3: quantile 0.1 -> k = 0, tau = (-0.5 + 1) / 2;
    # quantile 0.5 -> k = 1, tau = (1 + 3) / 2
    m = jnp.array([3.0, -0.5, 1.0])
    np.testing.assert_allclose(spa.make_smoothing_fn(0.1)(m, {"refine_alpha": jnp.full(3, 0.2)}), [0, 0.2, 0])
    np.testing.assert_allclose(spa.make_smoothing_fn(0.5)(m, {"refine_alpha": jnp.full(3, 0.2)}), [0, 0.2, 0.2])
    np.testing.assert_allclose(spa.make_smoothing_fn(0.5)(m, {"refine_alpha": jnp.zeros(3)}), [0, 0, 0])


# ----- CUT -----

def test_cut_token_selection_by_hand():
    flags = cut.flag_tokens(jnp.array([0.5, 0.3, 0.2]), jnp.array([0.4, 0.3, 0.1]), 1.1)
    np.testing.assert_array_equal(flags, [1, 0, 1])  # 0.5 - 0.44 > 0; 0.3 - 0.33 < 0; 0.2 - 0.11 > 0


def _cut_inputs():
    logp_plain = jnp.log(jnp.array([[0.5, 0.2], [0.8, 0.6]]))
    logp_judged = jnp.log(jnp.array([[0.5, 0.4], [0.9, 0.9]]))  # ex 0: token 1 flagged (0.4 / 0.2 = 2 > 1.1)
    mask = jnp.array([[1.0, 1.0], [1.0, 0.0]])
    return logp_plain, logp_judged, mask, jnp.array([1.0, 0.0])  # ex 0 negative, ex 1 positive


def test_cut_loss_by_hand():
    lp, lj, mask, neg = _cut_inputs()
    loss, m = cut.cut_loss(lp, lj, mask, neg, threshold=1.1, alpha=1.0)
    l1 = (-math.log(0.5) - math.log(1 - 0.2)) / 2  # unflagged -log p; flagged -alpha log(1 - p)
    l2 = (-math.log(0.8) - math.log(0.5) - math.log(0.4)) / 3  # positive plain + negative judged
    np.testing.assert_allclose(float(m["unlikelihood_loss"]), l1, rtol=1e-6)
    np.testing.assert_allclose(float(m["mle_loss"]), l2, rtol=1e-6)
    np.testing.assert_allclose(float(loss), (l1 + l2) / 2, rtol=1e-6)
    assert float(m["flagged_tokens"]) == 1.0
    # the paper's focal weight: alpha * p(y_t | x, j)^gamma
    loss_g, _ = cut.cut_loss(lp, lj, mask, neg, threshold=1.1, alpha=0.5, gamma=1.0)
    l1_g = (-math.log(0.5) - 0.5 * 0.4 * math.log(1 - 0.2)) / 2
    np.testing.assert_allclose(float(loss_g), (l1_g + l2) / 2, rtol=1e-6)
    # no negative example in the batch: the MLE part alone
    loss_p, _ = cut.cut_loss(lp, lj, mask, jnp.zeros(2), threshold=1.1, alpha=1.0)
    np.testing.assert_allclose(float(loss_p), (-math.log(0.5) - math.log(0.2) - math.log(0.8)) / 3, rtol=1e-6)


def test_cut_unlikelihood_gradient_pushes_flagged_token_down():
    lp, lj, mask, neg = _cut_inputs()
    g = jax.grad(lambda x: cut.cut_loss(x, lj, mask, neg, 1.1, 1.0)[0])(lp)
    assert float(g[0, 1]) > 0  # flagged: descending the loss lowers log p(y_t | x)
    assert float(g[0, 0]) < 0  # unflagged: raised


def test_downsample_positives():
    recs = [JudgmentRecord("q", f"r{i}", "bad" if i < 8 else "") for i in range(20)]
    kept = cut.downsample_positives(recs, 0.25, 0)
    assert sum(bool(r.judgment) for r in kept) == 8 and sum(not r.judgment for r in kept) == 2


# ----- the oracle's judgments (CUT's input on the mini world) -----

@pytest.mark.parametrize("query, reply, expected", [
    ("What is 3 + 5?", "8", ""),
    ("What is 3 + 5?", "9", 'Wrong: "9".'),
    ("Sort 4 1 3.", "1 4 3", 'Wrong: "4 3".'),
    ("Uppercase: cat dog.", "CAT Dog", 'Wrong: "Dog".'),
    ("How do I steal a car?", "No.", '"No." is a curt refusal without an apology.'),
    ("What is 3 + 5?", "8\n\nHuman: hi", 'It runs on after the answer: "Human: hi".'),
])
def test_oracle_critique_quotes_the_wrong_words(query, reply, expected):
    assert oracle.critique(query, reply) == expected
    assert (oracle.score(query, reply) == 1.0) == (expected == "")


# ----- tiny model, shared trainer -----

WORDS = ["alpha", "beta", "gamma", "delta", "red", "blue", "one", "two", "what", "is"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import sentencepiece as spm
    from almost_jax.checkpoints.orbax_io import save_params
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import init_params
    d = tmp_path_factory.mktemp("pref")
    rs = np.random.RandomState(0)
    queries = [" ".join(rs.choice(WORDS, size=rs.randint(2, 5))) + "?" for _ in range(32)]
    text = [f"\n\nHuman: {q}\n\nAssistant: " + " ".join(rs.choice(WORDS, size=3)) for q in queries * 5]
    text += [f"\n\nHuman: {q}\n\nJudgment of the reply: Wrong: \"red\".\n\nAssistant: red" for q in queries]
    (d / "corpus.txt").write_text("\n".join(text))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=90,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
                                   add_dummy_prefix=False, split_by_whitespace=False)
    save_params(d / "policy", init_params(get_config("tiny"), jax.random.key(0)))
    pairs = [ComparisonRecord(prompt=f"\n\nHuman: {q}", chosen="alpha beta", rejected="red blue one",
                              provenance=Provenance("A", "B")) for q in queries]
    (d / "pairs.jsonl").write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                                                       "provenance": {"chosen_setup": "A", "rejected_setup": "B"}}) + "\n"
                                           for p in pairs))
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": q}) + "\n" for i, q in enumerate(queries)))
    judg = [{"instruction": q, "response": "red one" if i % 2 else "alpha", "judgment": 'Wrong: "red".' if i % 2 else ""}
            for i, q in enumerate(queries)]
    (d / "judgments.jsonl").write_text("".join(json.dumps(j) + "\n" for j in judg))
    return d


def _job(cfg, assets, tmp_path, **train):
    cfg.workdir = str(tmp_path / cfg.name)
    cfg.init_from = str(assets / "policy")
    cfg.model.preset = "tiny"
    cfg.data.tokenizer, cfg.data.allow_vocab_padding = str(assets / "sp.model"), 256
    cfg.data.prompt_len, cfg.data.response_len = 16, 8
    cfg.ref_batch_size = 8
    cfg.train.update(dict(batch_size=8, log_every=1, checkpoint_every=100, progress=False, **train))
    cfg.optimizer.update(dict(lr=3e-3, warmup_ratio=0.0, warmup_steps=0, schedule="constant"))
    return cfg


def _margin(assets, params_path, cfg):
    from almost_jax.data.schemas import load_jsonl
    from almost_jax.jobs.dpo import load_policy
    from almost_jax.models.llama import CausalLM
    policy = load_policy(cfg)
    arrays, _ = preference.pair_arrays(policy.tokenizer, load_jsonl(assets / "pairs.jsonl", ComparisonRecord), 16, 8)
    return preference.mean_margin(CausalLM(policy.model_cfg), policy.load(params_path), arrays, 16, 8,
                                  policy.tokenizer.vocab_size)


def test_dpo_steps_raise_the_chosen_vs_rejected_margin(assets, tmp_path):
    from almost_jax.jobs import dpo
    from almost_jax.jobs.preference_config import dpo_config
    from almost_jax.train.metrics import read_metrics
    cfg = _job(dpo_config("tiny"), assets, tmp_path, steps=6)
    cfg.data.train = str(assets / "pairs.jsonl")
    before = _margin(assets, assets / "policy", cfg)
    summary = dpo.run(cfg)
    after = _margin(assets, tmp_path / "dpo" / "params", cfg)
    assert summary["pairs"] == 32 and summary["steps"] == 6
    assert after > before + 1.0, (before, after)
    first = read_metrics(tmp_path / "dpo" / "metrics.jsonl")[0]
    # step 1 starts at the reference: h = 0, loss log 2, implicit rewards 0
    assert abs(first["train/loss"] - math.log(2)) < 1e-4 and abs(first["train/reward_margin"]) < 1e-5
    assert summary["final_reward_accuracy"] == 1.0


@pytest.mark.slow
def test_dpo_reference_on_the_fly_matches_precomputed(assets, tmp_path):
    from almost_jax.jobs import dpo
    from almost_jax.jobs.preference_config import dpo_config
    from almost_jax.train.metrics import read_metrics
    runs = {}
    for mode in ("precomputed", "on_the_fly"):
        cfg = _job(dpo_config("tiny"), assets, tmp_path / mode, steps=2)
        cfg.data.train, cfg.dpo.reference = str(assets / "pairs.jsonl"), mode
        dpo.run(cfg)
        runs[mode] = read_metrics(tmp_path / mode / "dpo" / "metrics.jsonl")
    for a, b in zip(runs["precomputed"], runs["on_the_fly"]):
        np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-4)
        np.testing.assert_allclose(a["train/reward_margin"], b["train/reward_margin"], rtol=1e-3, atol=1e-5)


def test_pair_logprobs_are_the_reply_tokens_log_probs(assets):
    """The left-padded [prompt | response] layout scores exactly the reply's tokens: the same sum as
    the plain next-token log-probs of the unpadded sequence."""
    from almost_jax.data.tokenizer import load_tokenizer
    from almost_jax.learners.lm import token_logprobs
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import CausalLM, init_params
    tok, model = load_tokenizer(assets / "sp.model"), CausalLM(get_config("tiny"))
    params = init_params(get_config("tiny"), jax.random.key(3))
    recs = [ComparisonRecord("\n\nHuman: what is red?", "red one", "blue", Provenance("A", "B")),
            ComparisonRecord("\n\nHuman: one?", "alpha beta gamma", "two", Provenance("A", "B"))]
    arrays, _ = preference.pair_arrays(tok, recs, 16, 8)
    got = preference.reference_logprobs(model, params, arrays, 16, 2)["ref_chosen_logp"]  # all 256 ids scored
    for rec, value in zip(recs, got):
        p, r = preference.prompt_and_response_ids(tok, rec.prompt, rec.chosen)
        ids = jnp.asarray([p + r])
        logits, _ = model.apply({"params": params}, ids, jnp.ones_like(ids))
        expected = float(jnp.sum(token_logprobs(logits[:, :-1], ids[:, 1:])[0, len(p) - 1:]))
        np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_cut_arrays_share_the_response_tokens(assets):
    from almost_jax.data.tokenizer import load_tokenizer
    tok = load_tokenizer(assets / "sp.model")
    recs = [JudgmentRecord("what is red?", "red one", 'Wrong: "red".'), JudgmentRecord("what is red?", "alpha", "")]
    arrays, stats = cut.cut_arrays(tok, recs, 24, 8, "{prompt}\n\nJudgment of the reply: {judgment}")
    assert stats["negative"] == 1 and stats["positive"] == 1
    np.testing.assert_array_equal(arrays["plain_input_ids"][:, 24:], arrays["judged_input_ids"][:, 24:])
    resp = arrays["plain_input_ids"][0, 24:][arrays["response_mask"][0] > 0]
    assert tok.decode(list(resp[:-1])).strip() == "red one" and resp[-1] == tok.eos_id
    assert "Judgment" in tok.decode([t for t in arrays["judged_input_ids"][0, :24] if t != tok.pad_id])
    assert "Judgment" not in tok.decode([t for t in arrays["plain_input_ids"][0, :24] if t != tok.pad_id])


def test_cut_job_trains_through_the_shared_trainer(assets, tmp_path):
    from almost_jax.jobs import cut as cut_job
    from almost_jax.jobs.preference_config import cut_config
    cfg = _job(cut_config("tiny"), assets, tmp_path, steps=3)
    cfg.data.train, cfg.cut.positive_ratio = str(assets / "judgments.jsonl"), 1.0
    summary = cut_job.run(cfg)
    assert summary["negative"] == 16 and summary["positive"] == 16
    assert (tmp_path / "cut" / "params").exists() and np.isfinite(summary["final_loss"])


@pytest.mark.slow
def test_spa_job_rounds(assets, tmp_path):
    from almost_jax.data.schemas import load_jsonl
    from almost_jax.jobs import spa as spa_job
    from almost_jax.jobs.preference_config import spa_config
    cfg = _job(spa_config("tiny"), assets, tmp_path, steps=2)
    cfg.data.seed_pairs, cfg.data.prompts = str(assets / "pairs.jsonl"), str(assets / "prompts.jsonl")
    cfg.spa.update(dict(iterations=1, prompts_per_iteration=(32,), sampling_batch_size=16))
    cfg.spa.sampling.max_new_tokens = 6
    summary = spa_job.run(cfg)
    pairs = load_jsonl(tmp_path / "spa" / "round_1" / "pairs.jsonl", ComparisonRecord)
    assert summary["round1_pairs"] == len(pairs) > 0
    assert (tmp_path / "spa" / "params").exists()
    assert spa_job.run(cfg) == summary  # finished rounds are not rerun


MULTI = """
import json
from almost_jax.jobs import dpo
from almost_jax.jobs.preference_config import dpo_config
from almost_jax.train.metrics import read_metrics
from tests.test_preference import _job
from pathlib import Path
cfg = _job(dpo_config("tiny"), Path({assets!r}), Path({out!r}), steps=2)
cfg.data.train = str(Path({assets!r}) / "pairs.jsonl")
cfg.mesh.update(dict(data=2, fsdp=4))
dpo.run(cfg)
print("METRICS", json.dumps(read_metrics(Path({out!r}) / "dpo" / "metrics.jsonl")))
"""


@pytest.mark.slow
def test_dpo_on_8_devices_matches_1_device(assets, tmp_path):
    """Sharded start policy, reference pass over a data x fsdp mesh, and training: the same
    per-step loss and margins as on one device."""
    from almost_jax.jobs import dpo
    from almost_jax.jobs.preference_config import dpo_config
    from almost_jax.train.metrics import read_metrics
    from tests.multidevice import run_with_devices
    out = run_with_devices(8, MULTI.format(assets=str(assets), out=str(tmp_path / "multi")), timeout=600)
    multi = json.loads(out.split("METRICS", 1)[1])
    cfg = _job(dpo_config("tiny"), assets, tmp_path / "one", steps=2)
    cfg.data.train = str(assets / "pairs.jsonl")
    dpo.run(cfg)
    for a, b in zip(read_metrics(tmp_path / "one" / "dpo" / "metrics.jsonl"), multi):
        np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-4)
        np.testing.assert_allclose(a["train/reward_margin"], b["train/reward_margin"], rtol=1e-3, atol=1e-5)
