"""SFT examples: loss masks cover exactly the assistant tokens; packing keeps examples apart."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from almost_jax.data import chat
from almost_jax.data.sft_data import example_from_pair, examples_from_dialogue, to_rows


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from almost_jax.data.tokenizer import SentencePieceTokenizer
    from almost_jax.miniworld.corpus import write_corpus
    from almost_jax.miniworld.tokenizer_train import train_tokenizer
    d = tmp_path_factory.mktemp("tok")
    write_corpus(d / "c.jsonl", 2000, seed=0)
    return SentencePieceTokenizer(train_tokenizer(d / "c.jsonl", str(d / "sp"), vocab_size=256))


def masked_text(tok, ids, mask):
    return tok.decode([i for i, m in zip(ids, mask) if m and i != tok.eos_id])


def test_pair_mask_is_exactly_the_reply(tok):
    ids, mask = example_from_pair(tok, "\n\nHuman: What is 2 + 3?\n\nAssistant:", "5")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and mask[-1] == 1
    assert masked_text(tok, ids, mask) == " 5"
    assert tok.decode([i for i, m in zip(ids[1:], mask[1:]) if not m]) == "\n\nHuman: What is 2 + 3?\n\nAssistant:"


def test_dialogue_modes(tok):
    turns = [("human", "Sort 3 1 2."), ("assistant", "1 2 3"), ("human", "Uppercase: cat."), ("assistant", "CAT")]
    per_turn = examples_from_dialogue(tok, turns, "per_turn")
    assert [masked_text(tok, *e) for e in per_turn] == [" 1 2 3", " CAT"]
    (ids, mask), = examples_from_dialogue(tok, turns, "all_turns")
    assert masked_text(tok, ids, mask) == " 1 2 3 CAT"
    assert sum(1 for i, m in zip(ids, mask) if m and i == tok.eos_id) == 1
    with pytest.raises(ValueError, match="per_turn or all_turns"):
        examples_from_dialogue(tok, turns, "bogus")


def test_packing_segments_positions_and_isolation(tok):
    exs = [example_from_pair(tok, f"\n\nHuman: What is {i} + 1?\n\nAssistant:", str(i + 1)) for i in range(5)]
    rows = to_rows(exs, seq_len=64, pad_id=tok.pad_id, pack=True)
    unpacked = to_rows(exs, seq_len=64, pad_id=tok.pad_id, pack=False)
    assert len(rows["input_ids"]) < len(unpacked["input_ids"]) == 5
    assert rows["loss_mask"].sum() == unpacked["loss_mask"].sum()
    seg = rows["attention_mask"][0]
    assert seg.max() >= 2 and (rows["positions"][0][seg == 2][0] == 0)
    # Packed logits equal the logits of each example alone (segments never attend to each other).
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import CausalLM, init_params
    cfg = get_config("tiny")
    model, params = CausalLM(cfg), init_params(cfg, jax.random.key(0))
    packed, _ = model.apply({"params": params}, jnp.asarray(rows["input_ids"][:1]),
                            jnp.asarray(rows["attention_mask"][:1]), jnp.asarray(rows["positions"][:1]))
    for s in range(1, seg.max() + 1):
        where = np.nonzero(seg == s)[0]
        alone, _ = model.apply({"params": params}, jnp.asarray(rows["input_ids"][:1, where]),
                               jnp.ones((1, len(where)), jnp.int32))
        np.testing.assert_allclose(np.asarray(packed)[0, where], np.asarray(alone)[0], atol=1e-5)


def test_truncation_keeps_the_reply(tok):
    ids, mask = example_from_pair(tok, "\n\nHuman: " + "long context " * 20 + "\n\nAssistant:", "42")
    rows = to_rows([(ids, mask)], seq_len=16, pad_id=tok.pad_id)
    kept = rows["input_ids"][0]
    assert kept[-1] == tok.eos_id and rows["loss_mask"][0].sum() == sum(mask)


def test_tokenizer_without_bos_prefix(tmp_path):
    """A GPT-2 style tokenizer (SmolLM2) puts no BOS in front: SFT examples follow the tokenizer, as
    the sampler does, so training and sampling see the same token sequences."""
    from almost_jax.data.tokenizer import load_tokenizer
    from tests.hf_fixtures import save_bpe_tokenizer
    tok = load_tokenizer(save_bpe_tokenizer(tmp_path)[0])
    assert not tok.add_bos
    turns = [("human", "Hello world"), ("assistant", "How are you today?")]
    for mode in ("per_turn", "all_turns"):
        (ids, mask), = examples_from_dialogue(tok, turns, mode)
        assert len(ids) == len(mask) and ids[0] != tok.bos_id
        assert ids == tok.encode(chat.format_dialogue(turns)) + [tok.eos_id]
        assert tok.decode([i for i, m in zip(ids, mask) if m]).strip() == "How are you today?<|im_end|>"
