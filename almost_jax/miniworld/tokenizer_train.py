"""Train the mini world's SentencePiece model on its corpus (real ``SentencePieceTrainer``).

Special ids (LLaMA-like, plus an explicit pad): unk=0 ``<unk>``, bos=1 ``<s>``, eos=2 ``</s>``,
pad=3 ``<pad>``. User-defined pieces come next, in this order: ``"\\n\\n"``, ``"\\n"``,
``"Human:"``, ``"Assistant:"``, ``"-----"``; so newlines survive tokenization and the chat labels
are single tokens. ``split_digits=True`` (one token per digit) keeps arithmetic learnable.

Settings chosen so that text round-trips exactly and concatenation is tokenization-stable:
identity normalization, no whitespace collapsing, no dummy prefix (``encode(" 8")`` is
``["▁", "8"]`` whether or not a prompt precedes it). Every printable ASCII character gets a
piece, so prompts with characters the corpus lacks do not hit ``<unk>``.
Training reads the first ``max_sentences`` lines (no random sampling) and runs single-threaded,
so the same corpus gives a byte-identical model.
"""

from __future__ import annotations

import itertools
import os
import string
from typing import Iterable, Iterator, Sequence

import sentencepiece as spm

from almost_jax.miniworld.corpus import read_corpus

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
USER_SYMBOLS = ("\n\n", "\n", "Human:", "Assistant:", "-----")


def _sentences(texts: Iterable[str], max_sentences: int) -> Iterator[str]:
    yield "".join(c for c in string.printable if c not in "\n\r\t\x0b\x0c")
    n = 0
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line
                n += 1
                if n >= max_sentences:
                    return


def train_tokenizer(
    corpus_path: str | os.PathLike,
    model_prefix: str | os.PathLike,
    vocab_size: int = 512,
    model_type: str = "bpe",
    max_sentences: int = 200_000,
    user_defined_symbols: Sequence[str] = USER_SYMBOLS,
    extra_texts: Iterable[str] = (),
    byte_fallback: bool = False,
) -> str:
    """Train on a corpus JSONL (see ``corpus.write_corpus``) plus ``extra_texts``
    (e.g. prompt files); writes ``<model_prefix>.model`` / ``.vocab`` and returns the model path.

    ``vocab_size`` is a hard limit: SentencePiece raises if the corpus cannot fill it.
    """
    model_prefix = os.fspath(model_prefix)
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    texts = itertools.chain(extra_texts, read_corpus(corpus_path))
    spm.SentencePieceTrainer.train(
        sentence_iterator=_sentences(texts, max_sentences),
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        split_digits=True,
        byte_fallback=byte_fallback,
        user_defined_symbols=list(user_defined_symbols),
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>",
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
    return model_prefix + ".model"
