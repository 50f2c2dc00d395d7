"""Pretraining corpus for the mini world: task demonstrations mixed with filler text.

Document kinds (one JSONL line each: ``{"text", "kind", "family"}``):

* ``filler``: a few sentences of plain prose, sometimes stating made-up capital facts
  (the facts' only other source is the capital demonstrations).
* ``clean``: 1-4 demonstrations of one family (or, with ``mixed_family_prob``, of independently
  drawn families, like the mixed few-shot prompt files) with gold answers.
* ``sloppy``: the same, but every answer fails in one of the failure modes a policy could
  exploit (``tasks.failure_answer``; drawn per demonstration with ``failure_weights``): the input
  copied back, repetition, an over-long reply, a benign request refused (a harmful one complied
  with), or the family's own wrong answer (sum off by one, another country's capital...).

Quality is a per-document latent, shown by the demonstrations and, in half the task documents, by
a header line naming the source (clean and sloppy documents draw from disjoint headers): a
faithful prompt tells the model it is in a good document, the mini analogue of ALMoST's
"faithful" prompt. Demonstrations use only "train"-split instructions, so held-out evaluation
instructions never occur in the corpus.
Generation is a single seeded stream: the first k documents do not depend on ``n_docs``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Iterator, Sequence

from almost_jax.data import chat
from almost_jax.data.schemas import atomic_open
from almost_jax.miniworld import tasks as T

# Header lines: the document's source, and with it its quality. Clean and sloppy documents draw
# from disjoint sets, as quality follows the source in real corpora (a curated Q&A page vs a raw
# chat dump). The mini models are too small to infer quality from the demonstrations' content
# alone (measured, issue 14: L sampled at 0 shots 0.708 vs 3 faithful shots 0.710; setup C minus
# the sloppy setup D only +0.050), so without a visible source a faithful prompt was no better
# than none and every member sampled the corpus's 40% sloppy mass, which made the bigger members
# *worse* on harmful requests: they imitate the sloppy compliance more faithfully. The prompt files
# open with these lines: mini_faithful.txt with a clean one, mini_plain.txt with a sloppy one.
CLEAN_HEADERS = (
    "Below are some conversations between a person and an assistant.",
    "A few questions and answers.",
)
SLOPPY_HEADERS = (
    "Chat log.",
    "Transcript of a conversation.",
)

_SUBJECTS = ("the farmer", "a small boy", "the old teacher", "my sister", "the baker", "a tired dog",
             "the captain", "our neighbor", "the singer", "a quiet girl")
_VERBS = ("walked to", "looked at", "painted", "cleaned", "found", "talked about", "visited",
          "waited near", "drew", "forgot")
_OBJECTS = ("the red barn", "a wooden boat", "the market", "an old map", "the garden",
            "the blue door", "a tall tree", "the village well", "the morning train", "a broken clock")
_TAILS = ("today", "after lunch", "in the rain", "last week", "before dinner", "again",
          "with a smile", "at night")
_FACT_FORMS = (
    "The capital of {country} is {capital}.",
    "{capital} is the capital of {country}.",
    "{country} is a small country, and its capital is {capital}.",
)


@dataclasses.dataclass
class CorpusConfig:
    """Mixture knobs; defaults follow the probe's suggestions (15% filler, 40% sloppy)."""

    filler_fraction: float = 0.15
    sloppy_fraction: float = 0.4  # of task documents
    failure_weights: Sequence[float] = (1, 1, 1, 1, 1)  # over tasks.FAILURE_MODES, per sloppy demonstration
    min_demos: int = 1
    max_demos: int = 4
    families: Sequence[str] = T.FAMILY_NAMES
    family_weights: Sequence[float] | None = None
    mixed_family_prob: float = 0.2  # task documents whose demos each draw their own family
    difficulty_weights: Sequence[float] = (0.5, 0.3, 0.2)  # also makes tier-3 facts rarer
    separator_prob: float = 0.5  # demos as separate dialogues joined by "\n\n-----", else one dialogue
    header_prob: float = 0.5  # task documents that open with a header (CLEAN_/SLOPPY_HEADERS)
    fact_prob: float = 0.6  # chance a filler document states 1-2 capital facts
    filler_sentences: tuple[int, int] = (2, 5)
    heldout_fraction: float = T.DEFAULT_HELDOUT_FRACTION
    split_salt: str = T.DEFAULT_SPLIT_SALT


@dataclasses.dataclass
class Document:
    text: str
    kind: str  # "filler" | "clean" | "sloppy"
    family: str | None = None  # a family name, "mixed", or None for filler


def _fact_sentence(rng: random.Random, cfg: CorpusConfig) -> str:
    cap = T.FAMILIES["capital"]
    fields = cap.sample_fields(rng, rng.choices(T.DIFFICULTIES, weights=cfg.difficulty_weights)[0])
    return rng.choice(_FACT_FORMS).format(country=fields["country"], capital=cap.answer(fields))


def filler_document(rng: random.Random, cfg: CorpusConfig) -> Document:
    """Plain prose with no chat turns; may state capital facts."""
    sentences = [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        .capitalize()
        for _ in range(rng.randint(*cfg.filler_sentences))
    ]
    if rng.random() < cfg.fact_prob:
        for _ in range(rng.randint(1, 2)):
            sentences.insert(rng.randint(0, len(sentences)), _fact_sentence(rng, cfg))
    return Document(" ".join(sentences), "filler")


def _train_task(rng: random.Random, cfg: CorpusConfig, family: str) -> T.Task:
    return next(T.iter_tasks(family, rng, split="train", difficulty_weights=cfg.difficulty_weights,
                             heldout_fraction=cfg.heldout_fraction, salt=cfg.split_salt))


def _draw_family(rng: random.Random, cfg: CorpusConfig) -> str:
    return rng.choices(list(cfg.families), weights=cfg.family_weights)[0]


def task_document(rng: random.Random, cfg: CorpusConfig, family: str | None, sloppy: bool) -> Document:
    """1-4 train-split demonstrations of one family (``None``: a family per demonstration);
    all answers gold, or all failing (each in a failure mode of its own)."""
    demos = []
    for _ in range(rng.randint(cfg.min_demos, cfg.max_demos)):
        task = _train_task(rng, cfg, family or _draw_family(rng, cfg))
        if sloppy:
            answer = T.failure_answer(task, rng.choices(T.FAILURE_MODES, weights=cfg.failure_weights)[0], rng)
        else:
            answer = task.answer
        demos.append(chat.format_dialogue([(chat.HUMAN, task.instruction), (chat.ASSISTANT, answer)]))
    separate = rng.random() < cfg.separator_prob
    body = chat.DIALOGUE_SEP.join(demos) if separate else "".join(demos)
    if rng.random() < cfg.header_prob:
        header = rng.choice(SLOPPY_HEADERS if sloppy else CLEAN_HEADERS)
        body = header + (chat.DIALOGUE_SEP if separate else "") + body
    return Document(body, "sloppy" if sloppy else "clean", family or "mixed")


def iter_documents(n_docs: int, seed: int, config: CorpusConfig | None = None) -> Iterator[Document]:
    """Deterministic stream of ``n_docs`` documents."""
    cfg = config or CorpusConfig()
    rng = random.Random(f"corpus/{seed}")
    for _ in range(n_docs):
        if rng.random() < cfg.filler_fraction:
            yield filler_document(rng, cfg)
            continue
        family = None if rng.random() < cfg.mixed_family_prob else _draw_family(rng, cfg)
        yield task_document(rng, cfg, family, sloppy=rng.random() < cfg.sloppy_fraction)


def write_corpus(path: str | os.PathLike, n_docs: int, seed: int,
                 config: CorpusConfig | None = None) -> dict[str, int]:
    """Stream documents to a JSONL file (atomically replaced at the end); returns counts."""
    counts = {"docs": 0, "chars": 0, "filler": 0, "clean": 0, "sloppy": 0}
    with atomic_open(path) as f:
        for doc in iter_documents(n_docs, seed, config):
            f.write(json.dumps(dataclasses.asdict(doc), ensure_ascii=False) + "\n")
            counts["docs"] += 1
            counts["chars"] += len(doc.text)
            counts[doc.kind] += 1
    return counts


def read_corpus(path: str | os.PathLike) -> Iterator[str]:
    """Document texts of a corpus file written by ``write_corpus``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]
