"""seqio Tasks and Mixtures over the project's JSONL records, for jobs that want a tf.data pipeline.

Tokenization and loss masks are NOT reimplemented here: each record goes through the same
functions as the numpy path (`sft_data.example_from_pair` / `examples_from_dialogue`,
`rm_data.encode_for_rm`, `chat.prompt_for_reply`, the tokenizer wrapper), inside the task's data
source. seqio adds what it is good at: per-host sharding (`seqio.ShardInfo`; a host reads the
files but tokenizes only the records of its slice: i % num_shards == index), seeded shuffling,
mixtures with rates, and t5-style packing (segment ids 1..k in `attention_mask`, 0 = pad,
positions restarting at 0 per segment).

Over-long features lose their BEGINNING, as in `to_rows` / `encode_for_rm` / the sampler, so the
reply and its EOS always survive. Pretraining documents are concatenated and cut into rows, as
`lm_data.pack_documents` does. Packed SFT rows equal `sft_data.to_rows` except that seqio's
packer starts a new row after every `seq_len` examples (it packs batches of `seq_len` examples).

Resumption: `host_batches(..., start_step=s)` replays the same deterministic stream and skips
`s * per_host_batch` rows, so the step stored in a checkpoint (meta "data_step") fully
determines the data position.

This module imports tensorflow (through seqio); import it lazily, after transformers/torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np
import seqio
import tensorflow as tf

from almost_jax.data import chat
from almost_jax.data.schemas import SCHEMAS, read_jsonl
from almost_jax.data.sft_data import example_from_pair, examples_from_dialogue
from almost_jax.data.tokenizer import SentencePieceTokenizer, load_tokenizer
from almost_jax.data.lm_data import read_text_corpus
from almost_jax.data.rm_data import DEFAULT_TEMPLATE, encode_for_rm

KINDS = ("pretrain", "prompts", "comparisons", "dialogues", "demonstrations", "judgments")
SPLIT = "train"  # one split per task: a job's file is its data; held-out sets are separate files/tasks

# Token-id features of each kind; SFT kinds also carry "loss_mask".
_ID_FEATURES = {
    "pretrain": ("input_ids",),
    "prompts": ("prompt_ids",),
    "comparisons": ("chosen_ids", "rejected_ids"),
    "dialogues": ("input_ids",),
    "demonstrations": ("input_ids",),
    "judgments": ("instruction_ids", "response_ids", "judgment_ids"),
}
_SFT_KINDS = ("dialogues", "demonstrations")


def _records(kind: str, paths: Sequence[str], on_error: str) -> Iterator:
    """Validated records of every file in order (pretrain: the "text" of each line)."""
    for path in paths:
        if kind == "pretrain":
            yield from read_text_corpus(path, on_error)
        else:
            yield from read_jsonl(path, SCHEMAS[kind], on_error)


def _encoder(kind: str, tok, mode: str, template: str) -> Callable[[object], list[dict]]:
    """record -> examples (dicts of token-id lists), with the project's own tokenization."""
    if kind == "pretrain":
        return lambda text: [{"input_ids": tok.prefix_ids + tok.encode(text) + [tok.eos_id]}]
    if kind == "prompts":
        return lambda r: [{"prompt_ids": tok.encode(chat.prompt_for_reply([], r.prompt), add_bos=tok.add_bos)}]
    if kind == "comparisons":
        return lambda r: [] if r.chosen == r.rejected else [
            {"chosen_ids": encode_for_rm(tok, r.prompt, r.chosen, sys.maxsize, template),
             "rejected_ids": encode_for_rm(tok, r.prompt, r.rejected, sys.maxsize, template)}]
    if kind == "dialogues":
        return lambda r: [{"input_ids": ids, "loss_mask": mask} for ids, mask in
                          examples_from_dialogue(tok, [(t.speaker, t.text) for t in r.turns], mode)]
    if kind == "demonstrations":
        def demonstration(r):
            ids, mask = example_from_pair(tok, r.input, r.output)
            return [{"input_ids": ids, "loss_mask": mask}]
        return demonstration
    if kind == "judgments":
        return lambda r: [{"instruction_ids": tok.encode(r.instruction), "response_ids": tok.encode(r.response),
                           "judgment_ids": tok.encode(r.judgment)}]
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


class RecordSource(seqio.DataSource):
    """Records of JSONL files, tokenized in Python. Sharded by record index BEFORE tokenizing
    (seqio's FunctionDataSource refuses shard_info and would make every host tokenize all)."""

    def __init__(self, read: Callable[[], Iterable], encode: Callable[[object], list[dict]], keys: Sequence[str]):
        super().__init__(splits=(SPLIT,))
        self._read, self._encode, self._keys = read, encode, tuple(keys)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [split]

    def get_dataset(self, split: str = SPLIT, shuffle: bool = True, seed=None, shard_info=None, *,
                    sequence_length=None, use_cached: bool = False, num_epochs=1) -> tf.data.Dataset:
        del shuffle, seed, sequence_length, use_cached, num_epochs  # the Task shuffles and repeats
        index, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)

        def generate():
            for i, record in enumerate(self._read()):
                if i % count == index:
                    for ex in self._encode(record):
                        yield {k: np.asarray(ex[k], np.int32) for k in self._keys}

        spec = {k: tf.TensorSpec([None], tf.int32) for k in self._keys}
        # Cached: later epochs of a repeated stream read memory instead of re-tokenizing.
        return tf.data.Dataset.from_generator(generate, output_signature=spec).cache()


def keep_last(dataset: tf.data.Dataset, sequence_length=None) -> tf.data.Dataset:
    """seqio preprocessor: cut over-long features from the left (the reply and EOS survive)."""
    lengths = {k: v for k, v in (sequence_length or {}).items() if v}
    if not lengths:
        return dataset
    return dataset.map(lambda ex: {k: v[-lengths[k]:] if k in lengths else v for k, v in ex.items()})


def task_name(kind: str, paths: str | Sequence[str], tokenizer_path: str, **options) -> str:
    """Deterministic name: the same files, tokenizer and options always give the same task."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    key = json.dumps([kind, [os.path.abspath(p) for p in paths], os.path.abspath(tokenizer_path), options],
                     sort_keys=True)
    return f"almost_{kind}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def register_task(kind: str, paths: str | Sequence[str], tokenizer_path: str, *, mode: str = "per_turn",
                  template: str = DEFAULT_TEMPLATE, on_error: str = "raise",
                  shuffle_buffer_size: int = 10_000, name: str | None = None) -> str:
    """Register a Task for one record kind over `paths`; returns its name.

    Idempotent: registering the same name again replaces the task (never fails). `mode` is the
    dialogue mode (per_turn / all_turns), `template` the reward-model input template."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    paths = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    tokenizer_path = os.fspath(tokenizer_path)
    tok = load_tokenizer(tokenizer_path)
    name = name or task_name(kind, paths, tokenizer_path, mode=mode, template=template, on_error=on_error)
    vocab = (seqio.SentencePieceVocabulary(str(tok.path)) if isinstance(tok, SentencePieceTokenizer)
             else seqio.PassThroughVocabulary(tok.vocab_size))
    features = {k: seqio.Feature(vocab, add_eos=False, dtype=tf.int32) for k in _ID_FEATURES[kind]}
    if kind in _SFT_KINDS:
        features["loss_mask"] = seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False, dtype=tf.int32)
    source = RecordSource(lambda: _records(kind, paths, on_error), _encoder(kind, tok, mode, template), features)
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=source, output_features=features, preprocessors=[keep_last],
                           shuffle_buffer_size=shuffle_buffer_size)
    return name


def register_mixture(name: str, tasks_and_rates: Sequence[tuple[str, float]]) -> str:
    """Register a Mixture sampling registered tasks (with the same features) at the given rates."""
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, [(t, float(r)) for t, r in tasks_and_rates])
    return name


def _layout(features) -> str:
    keys = set(features)
    if keys == {"input_ids", "loss_mask"}:
        return "sft"
    if keys == {"input_ids"}:
        return "lm"
    return "padded"


def _mask_name(key: str) -> str:
    return (key[:-len("_ids")] if key.endswith("_ids") else key) + "_mask"


def _pad_to(x: tf.Tensor, length: int, value: int = 0) -> tf.Tensor:
    return tf.reshape(tf.pad(x, [[0, length - tf.size(x)]], constant_values=value), [length])


def sft_rows_dataset(ds: tf.data.Dataset, seq_len: int, pad_id: int, pack: bool = True) -> tf.data.Dataset:
    """Examples {input_ids, loss_mask} (already <= seq_len) -> rows in the to_rows convention.

    Packing is seqio's `trim_and_pack_dataset`. It finds an example's length by counting nonzero
    ids, so ids and masks are shifted by +1 while packed (id 0 and mask 0 are real values here)."""
    if not pack:
        def pad(ex):
            n = tf.size(ex["input_ids"])
            return {"input_ids": _pad_to(ex["input_ids"], seq_len, pad_id),
                    "attention_mask": _pad_to(tf.ones([n], tf.int32), seq_len),
                    "loss_mask": _pad_to(ex["loss_mask"], seq_len), "positions": _pad_to(tf.range(n), seq_len)}
        return ds.map(pad)
    shifted = ds.map(lambda ex: {"input_ids": ex["input_ids"] + 1, "loss_mask": ex["loss_mask"] + 1})
    packed = seqio.utils.trim_and_pack_dataset(shifted, {"input_ids": seq_len, "loss_mask": seq_len})

    def unshift(ex):
        seg = ex["input_ids_segment_ids"]
        real = seg > 0
        return {"input_ids": tf.where(real, ex["input_ids"] - 1, pad_id), "attention_mask": seg,
                "loss_mask": tf.where(real, ex["loss_mask"] - 1, 0), "positions": ex["input_ids_positions"]}
    return packed.map(unshift)


def rows_dataset(name: str, seq_len: int, pad_id: int, *, shard_index: int = 0, num_shards: int = 1,
                 shuffle: bool = False, seed: int = 0, num_epochs: int | None = 1,
                 pack: bool = True) -> tf.data.Dataset:
    """Fixed-length training rows of a task or mixture, for one host's shard.

    SFT kinds: input_ids, attention_mask (segment ids), loss_mask, positions (see to_rows).
    Pretraining: documents concatenated and cut into rows: input_ids, attention_mask, loss_mask
    (all ones), as lm_rows(pack_documents(...)). Others: each `<x>_ids` right-padded with pad_id,
    plus `<x>_mask` (1 on tokens), as comparison_rows."""
    provider = seqio.get_mixture_or_task(name)
    layout = _layout(provider.output_features)
    lengths = {k: None if layout == "lm" else seq_len for k in provider.output_features}
    ds = provider.get_dataset(sequence_length=lengths, split=SPLIT, shuffle=shuffle, seed=seed,
                              shard_info=seqio.ShardInfo(shard_index, num_shards), num_epochs=num_epochs)
    if layout == "sft":
        return sft_rows_dataset(ds, seq_len, pad_id, pack)
    if layout == "lm":
        ones = tf.ones([seq_len], tf.int32)
        tokens = ds.map(lambda ex: ex["input_ids"]).unbatch()
        return tokens.batch(seq_len, drop_remainder=True).map(
            lambda ids: {"input_ids": tf.reshape(ids, [seq_len]), "attention_mask": ones, "loss_mask": ones})

    def pad(ex):
        out = {}
        for k in provider.output_features:
            out[k] = _pad_to(ex[k], seq_len, pad_id)
            out[_mask_name(k)] = _pad_to(tf.ones_like(ex[k]), seq_len)
        return out
    return ds.map(pad)


def _stack(ds: tf.data.Dataset) -> dict[str, np.ndarray]:
    parts = list(ds.batch(4096).as_numpy_iterator())
    if not parts:
        raise ValueError("the dataset is empty")
    return {k: np.concatenate([p[k] for p in parts]).astype(np.int32) for k in parts[0]}


def task_rows(name: str, seq_len: int, pad_id: int, **kwargs) -> dict[str, np.ndarray]:
    """All rows of `rows_dataset` (one pass, by default unshuffled) as numpy arrays for RowBatches."""
    return _stack(rows_dataset(name, seq_len, pad_id, **kwargs))


def task_examples(name: str, shard_index: int = 0, num_shards: int = 1) -> list[dict[str, list[int]]]:
    """Every example of a task in record order, untrimmed: what the numpy path would build."""
    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=None, split=SPLIT, shuffle=False, shard_info=seqio.ShardInfo(shard_index, num_shards),
        num_epochs=1)
    return [{k: v.tolist() for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def pack_rows(examples: Iterable[tuple[list[int], list[int]]], seq_len: int, pad_id: int,
              pack: bool = True) -> dict[str, np.ndarray]:
    """sft_data.to_rows (left truncation) with seqio's packer: the same rows, except that a new row
    starts after every `seq_len` examples."""
    examples = list(examples)
    ds = tf.data.Dataset.from_generator(
        lambda: ({"input_ids": np.asarray(i, np.int32), "loss_mask": np.asarray(m, np.int32)} for i, m in examples),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in ("input_ids", "loss_mask")})
    ds = keep_last(ds, {"input_ids": seq_len, "loss_mask": seq_len})
    return _stack(sft_rows_dataset(ds, seq_len, pad_id, pack))


def host_batches(name: str, seq_len: int, pad_id: int, per_host_batch: int, start_step: int = 0, *,
                 process_index: int | None = None, process_count: int | None = None, seed: int = 0,
                 pack: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches for steps start_step, start_step + 1, ... (endless, shuffled, seeded).

    Each host reads shard `process_index` of `process_count`; the global batch of a step is the
    hosts' batches side by side. The stream is a pure function of (files, seed, step): resuming
    at the checkpoint's "data_step" skips `start_step * per_host_batch` rows and continues."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    ds = rows_dataset(name, seq_len, pad_id, shard_index=index, num_shards=count, shuffle=True, seed=seed,
                      num_epochs=None, pack=pack)
    return ds.skip(int(start_step) * per_host_batch).batch(per_host_batch, drop_remainder=True).as_numpy_iterator()
