"""seqio tasks: every record kind, the numpy path's exact ids and masks, host shards, resumption.

tensorflow (via seqio) is imported here, after tests/conftest.py imported torch and transformers.
"""
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import seqio

from almost_jax.data import chat, seqio_tasks
from almost_jax.data.lm_data import lm_rows, pack_documents
from almost_jax.data.schemas import ComparisonRecord, DemonstrationRecord, DialogueRecord, load_jsonl
from almost_jax.data.sft_data import example_from_pair, examples_from_dialogue, to_rows
from almost_jax.data.rm_data import comparison_rows, encode_for_rm

REPO = Path(__file__).resolve().parents[1]
WORDS = ["cat", "dog", "sun", "tree", "blue", "red", "moon", "fish", "car", "book", "milk", "rain", "star", "hat"]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from almost_jax.data.tokenizer import SentencePieceTokenizer
    from almost_jax.miniworld.corpus import write_corpus
    from almost_jax.miniworld.tokenizer_train import train_tokenizer
    d = tmp_path_factory.mktemp("seqio")
    write_corpus(d / "world.jsonl", 300, seed=0)
    tok_path = train_tokenizer(d / "world.jsonl", str(d / "sp"), vocab_size=256)
    texts = [json.loads(line)["text"] for line in (d / "world.jsonl").read_text().splitlines()[:30]]
    n = len(WORDS)
    dialogues = [{"id": f"d{i}", "turns": [
        {"speaker": "human", "text": f"What is {i} + {i}?"}, {"speaker": "assistant", "text": str(2 * i)},
        {"speaker": "human", "text": f"Say {WORDS[i % n]} twice."},
        {"speaker": "assistant", "text": f"{WORDS[i % n]} {WORDS[i % n]}"}]} for i in range(12)]
    demos = [{"input": f"\n\nHuman: What is {i} + 1?\n\nAssistant:", "output": str(i + 1)} for i in range(49)]
    demos.append({"input": "\n\nHuman: " + " ".join(WORDS * 3) + "\n\nAssistant:", "output": "42"})  # > seq_len
    files = {
        "pretrain": _write(d / "corpus.jsonl", [{"text": t} for t in texts]),
        "prompts": _write(d / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"Uppercase: {w}."} for i, w in enumerate(WORDS)]),
        "comparisons": _write(d / "comparisons.jsonl", [
            {"prompt": f"\n\nHuman: Name a word after {w}.", "chosen": WORDS[(i + 1) % n], "rejected": "no",
             "provenance": {"chosen_setup": "A", "rejected_setup": "D"}} for i, w in enumerate(WORDS)]),
        "dialogues": _write(d / "dialogues.jsonl", dialogues),
        "demonstrations": _write(d / "demonstrations.jsonl", demos),
        "judgments": _write(d / "judgments.jsonl", [
            {"instruction": f"Sort {i} 1.", "response": f"1 {i}", "judgment": "Correct." if i > 1 else "Wrong."}
            for i in range(8)]),
    }
    return {"dir": d, "tok_path": tok_path, "tok": SentencePieceTokenizer(tok_path), "files": files, "texts": texts}


def _register(data, kind, **kw):
    return seqio_tasks.register_task(kind, data["files"][kind], data["tok_path"], shuffle_buffer_size=64, **kw)


def _sft_reference(data, kind, mode="per_turn"):
    tok = data["tok"]
    if kind == "dialogues":
        return [ex for r in load_jsonl(data["files"][kind], DialogueRecord)
                for ex in examples_from_dialogue(tok, [(t.speaker, t.text) for t in r.turns], mode)]
    return [example_from_pair(tok, r.input, r.output) for r in load_jsonl(data["files"][kind], DemonstrationRecord)]


def _assert_rows_equal(a, b):
    assert a.keys() == b.keys()
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _digest(batches):
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            h.update(k.encode() + np.ascontiguousarray(b[k]).tobytes())
    return h.hexdigest()


def test_every_kind_registers_with_the_project_tokenization(data):
    tok = data["tok"]
    names = {kind: _register(data, kind) for kind in seqio_tasks.KINDS}
    assert names["dialogues"] == _register(data, "dialogues")  # idempotent: same name, no error
    assert len(set(names.values())) == len(seqio_tasks.KINDS)
    expected_features = {"pretrain": {"input_ids"}, "prompts": {"prompt_ids"},
                         "comparisons": {"chosen_ids", "rejected_ids"}, "dialogues": {"input_ids", "loss_mask"},
                         "demonstrations": {"input_ids", "loss_mask"},
                         "judgments": {"instruction_ids", "response_ids", "judgment_ids"}}
    for kind, name in names.items():
        task = seqio.get_mixture_or_task(name)
        assert set(task.output_features) == expected_features[kind], kind
        ids_feature = next(k for k in task.output_features if k != "loss_mask")
        assert isinstance(task.output_features[ids_feature].vocabulary, seqio.SentencePieceVocabulary)
        assert set(seqio_tasks.task_examples(name)[0]) == expected_features[kind]

    ex = seqio_tasks.task_examples(names["pretrain"])
    assert [e["input_ids"] for e in ex] == [[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in data["texts"]]
    _assert_rows_equal(seqio_tasks.task_rows(names["pretrain"], 64, tok.pad_id),
                       lm_rows(pack_documents((tok.encode(t) for t in data["texts"]), 64, tok.eos_id, tok.bos_id)))

    ex = seqio_tasks.task_examples(names["prompts"])
    assert [e["prompt_ids"] for e in ex] == [tok.encode(chat.prompt_for_reply([], f"Uppercase: {w}."), add_bos=True)
                                             for w in WORDS]

    recs = load_jsonl(data["files"]["comparisons"], ComparisonRecord)
    ex = seqio_tasks.task_examples(names["comparisons"])
    assert [e["chosen_ids"] for e in ex] == [encode_for_rm(tok, r.prompt, r.chosen, 10 ** 6) for r in recs]
    for max_len in (64, 12):  # 12 cuts every input from the left, as the reward model does
        ref = comparison_rows(tok, recs, max_len)
        rows = seqio_tasks.task_rows(names["comparisons"], max_len, tok.pad_id)
        width = ref["chosen_ids"].shape[1]
        assert rows["chosen_ids"].shape == (len(recs), max_len)
        _assert_rows_equal({k: v[:, :width] for k, v in rows.items()}, ref)
        assert (rows["chosen_ids"][:, width:] == tok.pad_id).all() and rows["chosen_mask"][:, width:].sum() == 0

    for kind in ("dialogues", "demonstrations"):
        ex = seqio_tasks.task_examples(names[kind])
        assert [(e["input_ids"], e["loss_mask"]) for e in ex] == _sft_reference(data, kind)

    ex = seqio_tasks.task_examples(names["judgments"])
    assert ex[0] == {"instruction_ids": tok.encode("Sort 0 1."), "response_ids": tok.encode("1 0"),
                     "judgment_ids": tok.encode("Wrong.")}
    assert len(ex) == 8


def test_sft_loss_masks_cover_exactly_the_assistant_replies(data):
    tok = data["tok"]
    recs = load_jsonl(data["files"]["dialogues"], DialogueRecord)
    rows = seqio_tasks.task_rows(_register(data, "dialogues"), 64, tok.pad_id, pack=True)
    expected = [(chat.format_dialogue([(t.speaker, t.text) for t in r.turns[:i]]) + chat.REPLY_PREFIX, " " + turn.text)
                for r in recs for i, turn in enumerate(r.turns) if turn.speaker == "assistant"]
    segments = []
    for ids, seg, mask, pos in zip(rows["input_ids"], rows["attention_mask"], rows["loss_mask"], rows["positions"]):
        assert (ids[seg == 0] == tok.pad_id).all() and mask[seg == 0].sum() == 0
        for s in range(1, seg.max() + 1):
            where = seg == s
            np.testing.assert_array_equal(pos[where], np.arange(where.sum()))  # positions restart per segment
            segments.append((ids[where], mask[where]))
    assert len(segments) == len(expected) and len(rows["input_ids"]) < len(expected)  # packing happened
    for (ids, mask), (context, reply) in zip(segments, expected):
        trained = ids[mask == 1]
        assert trained[-1] == tok.eos_id and tok.eos_id not in trained[:-1]
        assert tok.decode(trained[:-1]) == reply
        assert ids[0] == tok.bos_id and tok.decode(ids[mask == 0][1:]) == context
        assert mask[0] == 0 and (np.diff(mask) >= 0).all()  # one trained span, at the end

    name = _register(data, "dialogues", mode="all_turns")
    for r, ex in zip(recs, seqio_tasks.task_examples(name)):
        ids, mask = np.array(ex["input_ids"]), np.array(ex["loss_mask"])
        replies = [t.text for t in r.turns if t.speaker == "assistant"]
        assert tok.decode(ids[(mask == 1) & (ids != tok.eos_id)]) == "".join(" " + t for t in replies)
        assert ids[-1] == tok.eos_id and mask[-1] == 1 and (ids[mask == 1] == tok.eos_id).sum() == 1


def test_seqio_rows_equal_numpy_rows(data):
    tok = data["tok"]
    seq_len = 40
    for kind in ("dialogues", "demonstrations"):
        ref = _sft_reference(data, kind)
        name = _register(data, kind)
        _assert_rows_equal(seqio_tasks.task_rows(name, seq_len, tok.pad_id, pack=False),
                           to_rows(ref, seq_len, tok.pad_id, pack=False))
        # seqio packs batches of seq_len examples: identical to to_rows on each such chunk.
        chunks = [to_rows(ref[i:i + seq_len], seq_len, tok.pad_id) for i in range(0, len(ref), seq_len)]
        _assert_rows_equal(seqio_tasks.task_rows(name, seq_len, tok.pad_id, pack=True),
                           {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})
    demos = _sft_reference(data, "demonstrations")
    assert len(demos) > seq_len and max(len(ids) for ids, _ in demos) > seq_len  # chunks and left truncation
    for subset in (demos[:seq_len], demos[-5:]):
        _assert_rows_equal(seqio_tasks.pack_rows(subset, seq_len, tok.pad_id), to_rows(subset, seq_len, tok.pad_id))


def test_host_shards_are_disjoint_complete_and_deterministic(data):
    name = _register(data, "dialogues")
    key = lambda e: (tuple(e["input_ids"]), tuple(e["loss_mask"]))  # noqa: E731
    full = [key(e) for e in seqio_tasks.task_examples(name)]
    shards = [[key(e) for e in seqio_tasks.task_examples(name, i, 2)] for i in range(2)]
    assert len(set(full)) == len(full)
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == sorted(full)
    assert shards[0] == [e for r in range(0, 12, 2) for e in full[2 * r:2 * r + 2]]  # whole records 0, 2, 4, ...
    for i in range(2):
        assert [key(e) for e in seqio_tasks.task_examples(name, i, 2)] == shards[i]
    runs = [_digest(_take(seqio_tasks.host_batches(name, 64, data["tok"].pad_id, 2, seed=5, process_index=i,
                                                   process_count=2), 3)) for i in (0, 1, 0)]
    assert runs[0] == runs[2] and runs[0] != runs[1]


def test_batches_are_deterministic_across_runs_and_processes(data):
    tok = data["tok"]
    name = _register(data, "demonstrations")
    batches = lambda seed: _take(seqio_tasks.host_batches(name, 40, tok.pad_id, 4, seed=seed), 5)  # noqa: E731
    first = _digest(batches(7))
    assert first == _digest(batches(7)) and first != _digest(batches(8))
    # A fresh process gets the same batches, and importing the rest of the package never loads tensorflow.
    script = f"""
import sys, importlib, pkgutil, almost_jax
for m in pkgutil.walk_packages(almost_jax.__path__, "almost_jax."):
    if m.name != "almost_jax.data.seqio_tasks" and not m.name.endswith("__main__"):  # __main__ runs a CLI
        importlib.import_module(m.name)
assert "tensorflow" not in sys.modules and "seqio" not in sys.modules, "tensorflow imported eagerly"
sys.path.insert(0, {str(REPO / "tests")!r})
from test_seqio_tasks import _digest, _take
from almost_jax.data import seqio_tasks
name = seqio_tasks.register_task("demonstrations", {data["files"]["demonstrations"]!r}, {data["tok_path"]!r},
                                 shuffle_buffer_size=64)
print("DIGEST", _digest(_take(seqio_tasks.host_batches(name, 40, {tok.pad_id}, 4, seed=7), 5)))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"DIGEST {first}" in out.stdout


def test_resume_at_a_step_continues_the_same_stream(data):
    tok = data["tok"]
    dialogues, demos = _register(data, "dialogues"), _register(data, "demonstrations")
    mixture = seqio_tasks.register_mixture("almost_test_sft_mix", [(dialogues, 1.0), (demos, 3.0)])
    assert seqio_tasks.register_mixture("almost_test_sft_mix", [(dialogues, 1.0), (demos, 3.0)]) == mixture
    for host in (0, 1):
        stream = lambda step: seqio_tasks.host_batches(mixture, 40, tok.pad_id, 4, step, seed=1,  # noqa: E731
                                                       process_index=host, process_count=2)
        from_zero = _take(stream(0), 8)  # past the end of the smaller task's shard: epochs repeat
        resumed = _take(stream(5), 3)
        for a, b in zip(from_zero[5:], resumed):
            _assert_rows_equal(a, b)
        assert _digest(from_zero[:3]) != _digest(resumed)


def test_sft_job_trains_with_the_seqio_pipeline(data, tmp_path, monkeypatch):
    from almost_jax.jobs import sft
    from almost_jax.jobs.sft_config import sft_config
    cfg = sft_config("tiny", batch_size=4, seq_len=64, steps=3, log_every=1, eval_every=0, checkpoint_every=100,
                     progress=False)
    import jax
    from almost_jax.checkpoints.orbax_io import save_params
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import init_params
    save_params(tmp_path / "init", jax.jit(lambda key: init_params(get_config("tiny"), key))(jax.random.key(0)))
    cfg.workdir, cfg.init_from = str(tmp_path / "sft"), str(tmp_path / "init")
    cfg.data.train, cfg.data.tokenizer = data["files"]["dialogues"], data["tok_path"]
    cfg.data.allow_vocab_padding, cfg.data.eval_fraction, cfg.data.on_error = 256, 0.2, "raise"
    cfg.optimizer.lr = 1e-3
    seen = {}
    real_fit = sft.fit

    def recording_fit(cfg_, model_cfg, loss_fn, rows, *args, **kwargs):
        seen["rows"] = rows
        return real_fit(cfg_, model_cfg, loss_fn, rows, *args, **kwargs)
    monkeypatch.setattr(sft, "fit", recording_fit)

    bad = cfg.copy_and_resolve_references()
    bad.data.pipeline = "tfds"
    with pytest.raises(ValueError, match="numpy or seqio"):
        sft.run(bad)
    cfg.data.pipeline = "seqio"
    summary = sft.run(cfg)
    assert summary["steps"] == 3 and math.isfinite(summary["final_loss"]) and math.isfinite(summary["eval_loss"])
    assert (tmp_path / "sft" / "params").exists()
    # The rows it trained on are the numpy pipeline's rows for the same records and split.
    tok = data["tok"]
    examples = sft.load_examples(cfg.data.train, tok, "dialogues", "per_turn", "raise")
    order = np.random.default_rng(int(cfg.train.seed)).permutation(len(examples))
    train_ex = [examples[i] for i in order[int(len(examples) * 0.2):]]
    _assert_rows_equal(seen["rows"], to_rows(train_ex, 64, tok.pad_id, pack=True))
