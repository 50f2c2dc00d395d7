"""Build the mini world on disk: corpus, tokenizer, held-out evaluation tasks, seed queries."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.data.schemas import PromptRecord, write_jsonl_atomic
from almost_jax.miniworld import tasks as T
from almost_jax.miniworld.corpus import CorpusConfig, write_corpus
from almost_jax.miniworld.tokenizer_train import train_tokenizer


def corpus_config(world: ConfigDict) -> CorpusConfig:
    known = {f.name for f in dataclasses.fields(CorpusConfig)}
    return CorpusConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in world.corpus.items() if k in known})


def task_records(tasks: list[T.Task], prefix: str) -> list[PromptRecord]:
    return [PromptRecord(id=f"{prefix}-{i}", prompt=t.instruction,
                         meta={"family": t.family, "difficulty": t.difficulty, "answer": t.answer})
            for i, t in enumerate(tasks)]


def build_world(world: ConfigDict, outdir: str | Path) -> dict:
    """Writes corpus.jsonl, tokenizer.model, eval_tasks.jsonl (held-out instructions, for the
    oracle) and seed_queries.jsonl (train-split instructions: the self-instruct seeds)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    counts = write_corpus(out / "corpus.jsonl", int(world.n_docs), int(world.seed), corpus_config(world))
    train_tokenizer(out / "corpus.jsonl", str(out / "tokenizer"), vocab_size=int(world.vocab_size))
    families = list(world.families)
    eval_tasks = T.generate_mixed(int(world.eval_per_family), seed=int(world.seed) + 1, families=families,
                                  split="eval")
    seeds = T.generate_mixed(int(world.seed_queries_per_family), seed=int(world.seed) + 2, families=families,
                             split="train")
    write_jsonl_atomic(out / "eval_tasks.jsonl", task_records(eval_tasks, "eval"))
    write_jsonl_atomic(out / "seed_queries.jsonl", task_records(seeds, "seed"))
    return {"corpus": dict(counts) if isinstance(counts, dict) else counts, "eval_tasks": len(eval_tasks),
            "seed_queries": len(seeds)}
