"""Expert iteration on a tiny world: every SFT example is the RM's pick among its candidates, each
round samples from the previous round's policy and fine-tunes from the configured start, and a
rerun reuses finished rounds."""
import json

import numpy as np
import pytest

from almost_jax.data.schemas import DialogueRecord, load_jsonl
from almost_jax.jobs import expert_iteration as ei
from tests.test_best_of_n import tiny_reward_model
from tests.test_policy_eval import TOKENIZER_VOCAB, WORDS, build_tiny_world

pytestmark = pytest.mark.slow  # two SFT runs and four sampling passes of a tiny model: ~1 min on 2 cores


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("ei_world")
    w = build_tiny_world(d)
    w["rm"] = tiny_reward_model(w, d / "rm")
    rs = np.random.RandomState(1)
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prompt": " ".join(rs.choice(WORDS, 4))}) + "\n"
                                             for i in range(12)))
    w["prompts"] = d / "prompts.jsonl"
    return w


def job(world, workdir, finetune_from="start"):
    cfg = ei.expert_iteration_config("tiny")
    cfg.update(dict(workdir=str(workdir), prompts=str(world["prompts"]), policy_init=world["params"], iterations=2,
                    n=4, finetune_from=finetune_from))
    cfg.policy.update(dict(tokenizer=str(world["tokenizer"]), allow_vocab_padding=256 - TOKENIZER_VOCAB, batch_size=4))
    cfg.policy.sampling.max_new_tokens = 6
    cfg.rm.update(dict(path=str(world["rm"]), batch_size=16))
    cfg.sft.train.update(dict(steps=3, batch_size=4, seq_len=64, log_every=1, checkpoint_every=100))
    cfg.sft.update(dict(eval_batch_size=4))
    cfg.sft.optimizer.lr = 1e-3
    cfg.sft.data.eval_fraction = 0.0
    cfg.lock()  # as the command line gives it
    return cfg


def sft_config_of(workdir, i):
    return json.loads((workdir / f"iter_{i}" / "sft" / "manifest.json").read_text())["config"]


def test_rounds_pick_by_rm_sample_from_the_last_policy_and_restart_from_the_start(world, tmp_path, monkeypatch):
    sampled_from = []
    build = ei.build_sampler
    monkeypatch.setattr(ei, "build_sampler", lambda setup, *a: (sampled_from.append(setup.params), build(setup, *a))[1])
    summary = ei.run(job(world, tmp_path))
    assert sampled_from == [world["params"], str(tmp_path / "iter_0" / "sft" / "params")]
    for i in range(2):
        dialogues = load_jsonl(tmp_path / f"iter_{i}" / "dialogues.jsonl", DialogueRecord)
        assert [d.id for d in dialogues] == [f"q{k}" for k in range(12)]
        for d in dialogues:
            cands = d.turns[1].candidates
            assert len(cands) == 4 and d.turns[1].text == cands[int(np.argmax([c.score for c in cands]))].text
        assert summary["iterations"][i]["rm_best"] >= summary["iterations"][i]["rm_sample"]
        assert sft_config_of(tmp_path, i)["init_from"] == world["params"]  # each round refits the same start
        assert sft_config_of(tmp_path, i)["data"]["train"] == str(tmp_path / f"iter_{i}" / "dialogues.jsonl")
    assert summary["final_params"] == str(tmp_path / "iter_1" / "sft" / "params")
    # a rerun reuses both rounds: no SFT retrains
    stamp = (tmp_path / "iter_1" / "sft" / "manifest.json").stat().st_mtime
    assert ei.run(job(world, tmp_path))["iterations"] == summary["iterations"]
    assert len(sampled_from) == 2  # nor samples again
    assert (tmp_path / "iter_1" / "sft" / "manifest.json").stat().st_mtime == stamp


def test_previous_round_as_the_sft_start(world, tmp_path):
    ei.run(job(world, tmp_path, "previous"))
    assert sft_config_of(tmp_path, 0)["init_from"] == world["params"]
    assert sft_config_of(tmp_path, 1)["init_from"] == str(tmp_path / "iter_0" / "sft" / "params")


def test_bad_settings_are_refused(world, tmp_path):
    cfg = job(world, tmp_path)
    cfg.finetune_from = "best"  # an existing key: allowed on a locked config
    with pytest.raises(ValueError, match="finetune_from"):
        ei.run(cfg)
    cfg = job(world, tmp_path)
    cfg.gold = "human"
    with pytest.raises(ValueError, match="gold scorer"):
        ei.run(cfg)
    assert not (tmp_path / "iter_0").exists()  # refused before any sampling
