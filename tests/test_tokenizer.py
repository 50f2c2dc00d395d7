"""Tokenizers from Hugging Face checkpoint dirs read as `transformers` reads them: ids identical to
AutoTokenizer's on varied text (spaces, newlines, unicode), BOS/EOS/pad from the dir's files in
transformers' precedence, command-line overrides, and clear errors."""
import json

import pytest
from transformers import AutoTokenizer

from almost_jax.data.tokenizer import HFTokenizer, SentencePieceTokenizer, check_vocab, load_tokenizer
from tests.hf_fixtures import TOKENIZER_TEXT, save_bpe_tokenizer, save_sp_tokenizer

TEXTS = TOKENIZER_TEXT + [
    "", " ", "\n", "x", "  two  spaces  inside", "ends with a space ", "\n\nHuman: hi\n\nAssistant:",
    "\n\nHuman:  double space\n\nAssistant:  reply", "tabs\t\tand\r\nwindows lines", "ünïcödé ∑ 中文 🤖🤖 ﬁ",
    "A" * 40, "mixed123numbers456", "trailing newlines\n\n\n",
]


@pytest.fixture(scope="module", params=["bpe", "sp"])
def pair(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    (save_bpe_tokenizer if request.param == "bpe" else save_sp_tokenizer)(d)
    return request.param, load_tokenizer(d), AutoTokenizer.from_pretrained(str(d))


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_like_transformers(pair, text):
    kind, ours, ref = pair
    assert isinstance(ours, HFTokenizer if kind == "bpe" else SentencePieceTokenizer)
    assert ours.encode(text) == ref(text, add_special_tokens=False).input_ids
    assert ours.encode(text, add_bos=ours.add_bos) == ref(text).input_ids  # BOS as transformers adds it
    ids = ref(text, add_special_tokens=False).input_ids
    assert ours.decode(ids) == ref.decode(ids)


def test_special_ids_like_transformers(pair):
    kind, ours, ref = pair
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (ref.bos_token_id, ref.eos_token_id, len(ref))
    assert ours.add_bos == (kind == "sp")  # LLaMA's tokenizer adds <s>; a GPT-2 style one adds nothing
    assert ours.pad_id == (ref.pad_token_id if ref.pad_token_id is not None else 0)  # LLaMA: no pad -> <unk>
    assert ours.prefix_ids == ([ours.bos_id] if kind == "sp" else [])


def test_special_token_strings_in_text_stay_text_for_sentencepiece(tmp_path):
    """The one documented difference: transformers maps "</s>" typed inside a text to the EOS id;
    sentencepiece (and so almost_jax) reads it as plain text, so user text cannot end a sequence."""
    save_sp_tokenizer(tmp_path)
    ours, ref = load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))
    assert ref("a </s> b", add_special_tokens=False).input_ids.count(2) == 1
    assert 2 not in ours.encode("a </s> b")


def test_precedence_tokenizer_config_over_special_map_over_config_json(tmp_path):
    d, _ = save_bpe_tokenizer(tmp_path / "modern", bos=None, eos="<|im_end|>", pad=None)
    (d / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}))
    tok = load_tokenizer(d)
    # eos from tokenizer_config.json; bos and pad only in config.json, which is the last resort
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 2, 1)
    ref = AutoTokenizer.from_pretrained(str(d))
    assert ref.eos_token_id == tok.eos_id
    # a stale special_tokens_map.json beside a modern tokenizer_config.json is ignored, as transformers does
    (d / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    assert load_tokenizer(d).eos_id == AutoTokenizer.from_pretrained(str(d)).eos_token_id == 2

    d, _ = save_bpe_tokenizer(tmp_path / "legacy", legacy_special_map=True, bos="<|endoftext|>", eos="<|im_start|>",
                              pad=None)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "eos_token": "<|im_end|>"}))
    ref = AutoTokenizer.from_pretrained(str(d))
    tok = load_tokenizer(d)  # without added_tokens_decoder, transformers merges special_tokens_map.json over it
    assert (tok.bos_id, tok.eos_id) == (ref.bos_token_id, ref.eos_token_id) == (0, 1)
    assert tok.pad_id == tok.eos_id  # no pad anywhere: pad with EOS (masked out)


def test_no_bos_token_means_no_bos_added(tmp_path):
    d, _ = save_bpe_tokenizer(tmp_path, bos=None)
    tok = load_tokenizer(d)
    assert not tok.has_bos and not tok.add_bos and tok.prefix_ids == []
    assert tok.bos_id == tok.eos_id  # the id used where one is needed (GPT-2's convention)


def test_overrides_by_token_or_id_and_errors(tmp_path):
    d, _ = save_bpe_tokenizer(tmp_path)
    tok = load_tokenizer(d, bos="<|endoftext|>", eos="1", pad=0)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 0)
    with pytest.raises(ValueError, match=r"eos token '<\|nope\|>' \(from config.tokenizer_eos\) is not in the vocab"):
        load_tokenizer(d, eos="<|nope|>")
    with pytest.raises(ValueError, match="pad id 100000"):
        load_tokenizer(d, pad=100000)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "eos_token": "<|missing|>"}))
    with pytest.raises(ValueError, match=r"tokenizer_config.json:eos_token"):
        load_tokenizer(d)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.model"):
        load_tokenizer(tmp_path / "empty")


def test_no_eos_anywhere_is_an_error(tmp_path):
    d, _ = save_bpe_tokenizer(tmp_path, bos=None, eos=None, pad=None)
    with pytest.raises(ValueError, match="no EOS token.*tokenizer_eos"):
        load_tokenizer(d)
    assert load_tokenizer(d, eos="<|im_end|>").eos_id == 2


def test_check_vocab(tmp_path):
    d, n = save_bpe_tokenizer(tmp_path)
    tok = load_tokenizer(d)
    check_vocab(tok, n)
    check_vocab(tok, n + 4, allow_padding=4)
    with pytest.raises(ValueError, match="does not belong to this model"):
        check_vocab(tok, n + 4)
