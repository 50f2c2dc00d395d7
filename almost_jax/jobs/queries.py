"""ALMoST stage 1a: the queries everything else answers.

    python -m almost_jax.jobs.queries --config=configs/mini/queries.py

source = "self_instruct" (the paper's recipe, for real LLMs): a vanilla model sees an instruction
line and k (default 10) queries drawn from the seeds plus those mined so far, as "Query: ..."
lines, and continues; the first "Query:" line of the continuation is kept if it passes the
length rules and its ROUGE-L F to every existing query is below the threshold (0.5). Mined
queries are appended to the output as they are accepted, so a killed job resumes.
source = "miniworld": procedurally drawn training-split tasks of the mini world (its tiny models
are not trained to write queries), in disjoint sets that each hold every family.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.config_lib import model_block
from almost_jax.data.schemas import PromptRecord, load_jsonl, write_jsonl_atomic
from almost_jax.data.templates import load_seed_queries, prompt_path
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.parallel.hosts import check_same_on_all_hosts, primary_appender
from almost_jax.synthetic.rules import QueryRules, bad_query_reason, parse_query

log = logging.getLogger(__name__)


class RougeDeduper:
    """Rejects a query whose ROUGE-L F-measure with any kept query reaches the threshold."""

    def __init__(self, threshold: float):
        from rouge_score import rouge_scorer
        self.threshold = threshold
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.kept: list[str] = []

    def max_overlap(self, query: str) -> float:
        return max((self.scorer.score(k, query)["rougeL"].fmeasure for k in self.kept), default=0.0)

    def add_if_new(self, query: str) -> bool:
        if self.max_overlap(query) >= self.threshold:
            return False
        self.kept.append(query)
        return True


def self_instruct(cfg: ConfigDict, out: Path) -> dict:
    """Rounds of `batch_prompts` generation prompts. Round r's prompts depend only on the seed and
    the queries mined before it, and slot j of round r samples with the key of (seed,
    "self_instruct", "r/j"); every mined query records its (round, slot). A killed job redoes its
    last round from the same state, skipping what that round already wrote, so the output is
    what an uninterrupted run writes."""
    from almost_jax.synthetic.generation import load_generator
    seeds = load_seed_queries(cfg.seed_file if Path(cfg.seed_file).is_file() else prompt_path(cfg.seed_file))
    existing = load_jsonl(out, PromptRecord, partial_tail_ok=True) if out.exists() else []
    check_same_on_all_hosts("\n".join(r.prompt for r in existing), f"mined queries in {out}")
    rounds_of = [int(r.meta.get("round", -1)) for r in existing]  # -1: written before rounds were recorded
    start = max(rounds_of[-1], 0) if existing else 0
    mined = [r.prompt for r, k in zip(existing, rounds_of) if k < start]
    written = {int(r.meta["slot"]): r.prompt for r, k in zip(existing, rounds_of) if k == start}
    dedupe = RougeDeduper(float(cfg.rouge_threshold))
    dedupe.kept.extend(seeds.queries + mined)
    rules = QueryRules.from_config(cfg.rules)
    generate = load_generator(cfg.generator)
    rejected = {"parse": 0, "rules": 0, "rouge": 0}
    r = start
    with primary_appender(out) as sink:
        while len(mined) < int(cfg.num_queries) and r < int(cfg.max_rounds):
            rng = random.Random(f"{cfg.seed}/round{r}")
            pool = seeds.queries + mined
            prompts = [seeds.render(rng.sample(pool, min(int(cfg.n_shots), len(pool))))
                       for _ in range(int(cfg.batch_prompts))]
            raws = generate(prompts, seed=int(cfg.seed), desc=f"queries round {r}", stream="self_instruct",
                            ids=[f"{r}/{slot}" for slot in range(len(prompts))])
            for slot, raw in enumerate(raws):
                q = parse_query("Query:" + raw)
                if not q:
                    rejected["parse"] += 1
                elif bad_query_reason(q, rules):
                    rejected["rules"] += 1
                elif not dedupe.add_if_new(q):
                    rejected["rouge"] += 1
                elif len(mined) < int(cfg.num_queries):
                    if r != start or slot not in written:
                        sink.write(PromptRecord(id=f"{cfg.id_prefix}{len(mined)}", prompt=q,
                                                meta={"source": "self_instruct", "round": r, "slot": slot}))
                    elif written[slot] != q:
                        log.warning("queries: round %d slot %d resumed as %r, the file has %r", r, slot, q,
                                    written[slot])
                    mined.append(q)
            r += 1
    generate.truncations.report()
    return {"queries": len(mined), "rounds": r, **{f"rejected_{k}": v for k, v in rejected.items()},
            "truncated_prompts": generate.truncations.truncated}


def miniworld_queries(cfg: ConfigDict, out: Path) -> dict:
    """Set `set_name` of the mini world's query sets `sets` ((name, size) pairs, built together so
    that they are disjoint and each holds every family: miniworld/query_sets.py); without `sets`,
    one set of `num_queries`."""
    from almost_jax.miniworld.query_sets import build_query_sets
    name = cfg.set_name or "queries"
    sets = [(str(n), int(k)) for n, k in cfg.sets] or [(name, int(cfg.num_queries))]
    tasks = build_query_sets(sets, list(cfg.families), int(cfg.seed))[name]
    records = [PromptRecord(id=f"{cfg.id_prefix}{i}", prompt=t.instruction,
                            meta={"family": t.family, "difficulty": t.difficulty, "source": "miniworld"})
               for i, t in enumerate(tasks)]
    write_jsonl_atomic(out, records)
    return {"queries": len(records)}


def run(cfg: ConfigDict) -> dict:
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.source == "self_instruct":
        summary = self_instruct(cfg, out)
    elif cfg.source == "miniworld":
        summary = miniworld_queries(cfg, out)
    else:
        raise ValueError(f"queries.source must be self_instruct or miniworld, got {cfg.source!r}")
    write_manifest(out.with_suffix(".manifest.json"), cfg, **summary)
    log.info("queries: %s", summary)
    return summary


def queries_config(source: str = "self_instruct") -> ConfigDict:
    """Defaults from the official code: 10 shots, T=1.2, top-p 0.9, 64 new tokens, ROUGE-L 0.5.
    `generator.params` as an HF dir gives the generator's architecture and tokenizer too."""
    from almost_jax.config_lib import tokenizer_fields
    return ConfigDict(dict(
        source=source, output="work_dir/queries/queries.jsonl", num_queries=10000, seed=0, id_prefix="q",
        families=(), sets=(), set_name="", seed_file="seed_queries.txt", n_shots=10, rouge_threshold=0.5,
        batch_prompts=64, max_rounds=1000,
        rules=ConfigDict(dict(min_chars=30, max_chars=250, long_query_rule="intent")),
        generator=ConfigDict(dict(model=model_block("llama1-30b", dtype="bfloat16", param_dtype="bfloat16"),
                                  params="", **tokenizer_fields(), batch_size=64, bucket=64,
                                  sampling=ConfigDict(dict(temperature=1.2, top_p=0.9, max_new_tokens=64,
                                                           stop_strings=("\n",))))),
    ))


if __name__ == "__main__":
    run_job(run)
