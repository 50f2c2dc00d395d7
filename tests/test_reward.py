"""Reward-model loss against hand-computed values, input encoding, a training step, the scoring
contract saved with an RM and loaded with it, reward normalisation, and the train_rm / eval_rm jobs."""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almost_jax.data.rm_data import CONTRACT_FILE, RewardContract, comparison_rows, encode_for_rm
from almost_jax.learners.reward import RewardScorer, load_reward_model, make_reward_loss, pairwise_loss


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


# ----- the scoring contract and normalisation -----

def test_contract_round_trip_and_clear_errors(tmp_path):
    c = RewardContract(input_template="Q: {prompt} A: {response}", max_len=64, reward_mean=1.5, reward_std=0.5,
                       reward_stats_n=20, architecture={"vocab_size": 300}, tokenizer="/x/tok.model")
    assert RewardContract.load(c.save(tmp_path).parent) == c
    (tmp_path / "old").mkdir()
    with pytest.raises(FileNotFoundError, match=CONTRACT_FILE):  # an RM dir from before contracts: no silent default
        RewardContract.load(tmp_path / "old")
    with pytest.raises(ValueError, match="truncation_side"):
        RewardContract(truncation_side="right")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONTRACT_FILE).write_text(json.dumps({"max_len": 3, "templat": "x"}))
    with pytest.raises(ValueError, match="not a reward contract"):
        RewardContract.load(tmp_path / "bad")


def test_scorer_encodes_by_the_contract_and_normalises_with_its_statistics():
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import ScalarHeadModel, init_params
    cfg = get_config("tiny")
    params = init_params(cfg, jax.random.key(3), "scalar", head_init_std=0.5)
    prompts, replies = ["\n\nHuman: hi", "\n\nHuman: sort a b", "x"], ["hello", "a b", "y"]
    plain = RewardScorer(ScalarHeadModel(cfg), params, CharTok(), RewardContract(max_len=32), batch_size=2)
    raw = plain.raw_scores(prompts, replies)
    # by hand: each pair encoded alone with the contract's template + EOS, right-padded to 32, read at its EOS
    score = jax.jit(lambda ids, mask: ScalarHeadModel(cfg).apply({"params": params}, ids, mask))
    for p, r, got in zip(prompts, replies, raw):
        seq = encode_for_rm(CharTok(), p, r, 32)
        ids, mask = np.zeros((1, 32), np.int32), np.zeros((1, 32), np.int32)
        ids[0, :len(seq)], mask[0, :len(seq)] = seq, 1
        np.testing.assert_allclose(got, score(ids, mask)[0], rtol=1e-5)
    with pytest.raises(ValueError, match="no reward statistics"):
        plain.normalized_scores(prompts, replies)
    stats = RewardScorer(ScalarHeadModel(cfg), params, CharTok(), RewardContract(
        max_len=32, reward_mean=0.25, reward_std=2.0, reward_stats_n=10), batch_size=2)
    np.testing.assert_allclose(stats.normalized_scores(prompts, replies), (raw - 0.25) / 2.0, rtol=1e-5)
    other = RewardScorer(ScalarHeadModel(cfg), params, CharTok(), RewardContract(
        input_template="{response} <- {prompt}", max_len=32), batch_size=2)
    assert not np.allclose(other.raw_scores(prompts, replies), raw)  # the template is part of the score


# ----- the train_rm and eval_rm jobs on a tiny model -----

WORDS = ["alpha", "beta", "gamma", "delta", "red", "blue", "one", "two"]


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory):
    """A tiny RM trained by the job on pairs where the reply made of 'alpha' wins, with a non-default
    template; returns (workdir, training records)."""
    import sentencepiece as spm
    from almost_jax.checkpoints.orbax_io import save_params
    from almost_jax.data.schemas import ComparisonRecord, Provenance, write_jsonl_atomic
    from almost_jax.jobs import train_rm
    from almost_jax.jobs.reward_config import reward_config
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import init_params
    d = tmp_path_factory.mktemp("rm")
    rs = np.random.RandomState(0)
    (d / "corpus.txt").write_text("\n".join(" ".join(rs.choice(WORDS, 6)) for _ in range(200)))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=40,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2)
    recs = [ComparisonRecord(prompt=f"\n\nHuman: {' '.join(rs.choice(WORDS, 3))}?", chosen="alpha alpha",
                             rejected=" ".join(rs.choice(WORDS[1:], 2)), provenance=Provenance("A", "B"), id=f"c{i}")
            for i in range(48)]
    write_jsonl_atomic(d / "train.jsonl", recs)
    save_params(d / "lm", init_params(get_config("tiny"), jax.random.key(0)))
    cfg = reward_config("tiny", batch_size=8, seq_len=40, steps=12, eval_every=0, checkpoint_every=100, progress=False)
    cfg.workdir, cfg.init_from = str(d / "work"), str(d / "lm")
    cfg.data.update(dict(train=str(d / "train.jsonl"), tokenizer=str(d / "sp.model"), allow_vocab_padding=256,
                         eval_fraction=0.25, input_template="Q:{prompt}\nA:{response}"))
    cfg.optimizer.update(dict(lr=3e-3, warmup_ratio=0.0))
    cfg.stats_reference_pairs = 6
    summary = train_rm.run(cfg)
    return d, train_rm.split_by_prompt(recs, 0.25)[0], summary


def test_train_rm_saves_the_contract_and_reward_statistics(trained_rm):
    from almost_jax.models.config import get_config
    d, train, summary = trained_rm
    work = d / "work"
    contract = RewardContract.load(work)
    assert contract.input_template == "Q:{prompt}\nA:{response}" and contract.max_len == 40
    assert contract.architecture == dataclasses.asdict(get_config("tiny"))
    assert contract.tokenizer == str(d / "sp.model") and contract.tokenizer_vocab_size == 40
    assert not (work / "reward_stats.json").exists()
    scorer = load_reward_model(work)
    assert scorer.contract == contract
    ref = train[:6]  # the statistics: mean / std of raw scores of both replies of the first 6 training pairs
    raw = np.concatenate([scorer.raw_scores([r.prompt for r in ref], [r.chosen for r in ref]),
                          scorer.raw_scores([r.prompt for r in ref], [r.rejected for r in ref])])
    assert contract.reward_stats_n == 12
    np.testing.assert_allclose([contract.reward_mean, contract.reward_std], [raw.mean(), raw.std()], rtol=1e-4, atol=1e-6)
    assert summary["reward_mean"] == contract.reward_mean and summary["heldout_accuracy"] > 0.5
    normalized = scorer.normalized_scores([r.prompt for r in ref], [r.chosen for r in ref])
    np.testing.assert_allclose(normalized, (raw[:6] - raw.mean()) / raw.std(), rtol=1e-3, atol=1e-5)


def test_eval_rm_reads_the_contract(trained_rm, tmp_path):
    from almost_jax.data.schemas import ComparisonRecord, Provenance, write_jsonl_atomic
    from almost_jax.jobs import eval_rm
    d, train, _ = trained_rm
    pairs = [ComparisonRecord(prompt="\n\nHuman: one two?", chosen=c, rejected=r, provenance=Provenance("A", "B"))
             for c, r in (("alpha alpha", "red blue"), ("red", "alpha"), ("alpha", "two"))]
    write_jsonl_atomic(tmp_path / "pairs.jsonl", pairs)
    hh = [{"chosen": f"\n\nHuman: one two?\n\nAssistant: {p.chosen}",
           "rejected": f"\n\nHuman: one two?\n\nAssistant: {p.rejected}"} for p in pairs]
    (tmp_path / "hh.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hh))
    cfg = eval_rm.eval_rm_config()
    cfg.update(dict(rm_path=str(d / "work" / "params"), files=(str(tmp_path / "pairs.jsonl"), str(tmp_path / "hh.jsonl")),
                    output=str(tmp_path / "out.json"), batch_size=4))
    results = eval_rm.run(cfg)
    scorer = load_reward_model(d / "work")  # by hand: chosen beats rejected under the RM's own template
    rc = scorer.raw_scores([p.prompt for p in pairs], [p.chosen for p in pairs])
    rr = scorer.raw_scores([p.prompt for p in pairs], [p.rejected for p in pairs])
    assert [r["n"] for r in results] == [3, 3]
    assert results[0]["accuracy"] == results[1]["accuracy"] == pytest.approx(np.mean(rc > rr))
    assert json.loads((tmp_path / "out.json").read_text())[0]["accuracy"] == results[0]["accuracy"]
    cfg.rm_path = str(d / "lm")  # a directory without a contract
    with pytest.raises(FileNotFoundError, match=CONTRACT_FILE):
        eval_rm.run(cfg)
