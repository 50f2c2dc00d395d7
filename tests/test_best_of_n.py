"""Best-of-n: candidates line up with their prompts and scoring contexts, best-of-m reads only the
first m samples, and the chat job's best-of-n reply is the reward model's pick on a tiny world."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from almost_jax.data import chat
from almost_jax.sampling.best_of_n import Candidates, best_index, best_of_n, pick_best, sample_candidates
from tests.test_policy_eval import TOKENIZER_VOCAB, build_tiny_world, random_params

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class FakeCompletion:
    text: str


class FakeSampler:
    """n completions per prompt, prompt-major like Sampler: " <prompt's last word>-<k>" plus a next turn."""

    def __init__(self, n):
        self.cfg = dataclasses.make_dataclass("Cfg", [("n", int)])(n)
        self.seeds = []

    def generate(self, prompts, seed=0, progress=False):
        self.seeds.append(seed)
        for p in prompts:
            word = p[: -len(chat.REPLY_PREFIX)].split()[-1]
            for k in range(self.cfg.n):
                yield FakeCompletion(f" {word}-{k}\n\nHuman: junk")


def length_score(contexts, replies):
    """Longer context words and higher sample index score higher: 'x-3' beats 'x-1'."""
    return np.array([len(c) + int(r.split("-")[1]) for c, r in zip(contexts, replies)], np.float64)


def test_candidates_follow_their_prompt_and_context():
    seen = []

    def score(contexts, replies):
        seen.extend(zip(contexts, replies))
        return length_score(contexts, replies)

    cands = sample_candidates(FakeSampler(3), ["\n\nHuman: a\n\nAssistant:", "\n\nHuman: bb\n\nAssistant:"],
                              ["ctx-a", "ctx-bb"], score, seed=7)
    assert cands.replies == [["a-0", "a-1", "a-2"], ["bb-0", "bb-1", "bb-2"]]  # cut at the next turn
    assert seen == [("ctx-a", "a-0"), ("ctx-a", "a-1"), ("ctx-a", "a-2"),
                    ("ctx-bb", "bb-0"), ("ctx-bb", "bb-1"), ("ctx-bb", "bb-2")]
    np.testing.assert_array_equal(cands.scores, [[5, 6, 7], [6, 7, 8]])
    with pytest.raises(ValueError, match="2 prompts but 1 scoring contexts"):
        sample_candidates(FakeSampler(3), ["p1", "p2"], ["c"], score)


def test_best_of_m_reads_only_the_first_m_samples():
    cands = Candidates([["a", "b", "c", "d"], ["e", "f", "g", "h"]], np.array([[0.1, 0.5, 0.2, 0.9], [3., 1., 3., 2.]]))
    assert pick_best(cands, 1) == ["a", "e"]  # best-of-1: the first sample
    assert pick_best(cands, 3) == ["b", "e"]  # 0.9 is the 4th sample; ties keep the first
    assert pick_best(cands) == ["d", "e"]
    np.testing.assert_array_equal(best_index(cands.scores, 4), [3, 0])
    for bad in (0, 5):
        with pytest.raises(ValueError, match="1 <= n <= 4"):
            pick_best(cands, bad)


def test_best_of_n_formats_queries_for_policy_and_scorer():
    contexts = []

    def score(c, r):
        contexts.extend(c)
        return -length_score(c, r)  # now the first sample wins

    sampler = FakeSampler(2)
    assert best_of_n(sampler, ["what is up", "hi"], score, seed=3) == ["up-0", "hi-0"]
    assert contexts == ["\n\nHuman: what is up"] * 2 + ["\n\nHuman: hi"] * 2 and sampler.seeds == [3]


# ---------------------------------------------------------------- the chat option on a tiny world

def tiny_reward_model(world: dict, directory: Path) -> Path:
    """A random 'tiny' reward model with a contract on the tiny world's tokenizer."""
    import jax
    from almost_jax.checkpoints.load import with_score_head
    from almost_jax.checkpoints.orbax_io import save_params
    from almost_jax.data.rm_data import RewardContract
    cfg = world["cfg"]
    save_params(directory / "params", with_score_head(random_params(cfg, seed=5), cfg, jax.random.key(3), 1.0))
    RewardContract(max_len=64, architecture=dataclasses.asdict(cfg), tokenizer=str(world["tokenizer"]),
                   tokenizer_vocab_size=TOKENIZER_VOCAB).save(directory)
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("bon_world")
    w = build_tiny_world(d)
    w["rm"] = tiny_reward_model(w, d / "rm")
    return w


def chat_config(world, *overrides):
    from almost_jax.config_lib import load_config_file
    return load_config_file(REPO / "configs/mini/chat.py", [
        "model.preset=tiny", f"params={world['params']}", f"tokenizer={world['tokenizer']}",
        f"allow_vocab_padding={256 - TOKENIZER_VOCAB}", "sampling.max_new_tokens=6", *overrides])


def test_chat_best_of_n_reply_is_the_reward_models_pick(world):
    from almost_jax.jobs.chat import make_session
    from almost_jax.learners.reward import load_reward_model
    from almost_jax.synthetic.generation import build_sampler
    from ml_collections import ConfigDict
    cfg = chat_config(world, "best_of_n=4", f"reward_model={world['rm']}", "sampling.temperature=1.0", "seed=10")
    session = make_session(cfg)
    reply = session.reply("hello there")
    # the same four samples (the session's first call uses seed + 1), scored by the RM in the chat format
    sampler = build_sampler(cfg, ConfigDict({**cfg.sampling.to_dict(), "n": 4}))
    samples = [chat.extract_reply(c.text) for c in sampler.generate([chat.prompt_for_reply([], "hello there")], seed=11)]
    scores = load_reward_model(world["rm"]).raw_scores(["\n\nHuman: hello there"] * 4, samples)
    assert len(set(samples)) > 1, samples  # the pick is a choice, not a forced one
    assert reply == samples[int(np.argmax(scores))], (reply, samples, scores)


def test_chat_best_of_n_needs_a_reward_model_and_sampling(world):
    from almost_jax.jobs.chat import make_session
    with pytest.raises(ValueError, match="needs --config.reward_model"):
        make_session(chat_config(world, "best_of_n=4", "sampling.temperature=1.0"))
    with pytest.raises(ValueError, match="greedy sampling"):
        make_session(chat_config(world, "best_of_n=4", f"reward_model={world['rm']}"))
