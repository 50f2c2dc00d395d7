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
    from almost_jax.synthetic.generation import load_generator
    seeds = load_seed_queries(cfg.seed_file if Path(cfg.seed_file).is_file() else prompt_path(cfg.seed_file))
    mined = [r.prompt for r in load_jsonl(out, PromptRecord, on_error="skip")] if out.exists() else []
    check_same_on_all_hosts("\n".join(mined), f"mined queries in {out}")
    dedupe = RougeDeduper(float(cfg.rouge_threshold))
    for q in seeds.queries + mined:
        dedupe.kept.append(q)
    rules = QueryRules.from_config(cfg.rules)
    rng = random.Random(f"{cfg.seed}/{len(mined)}")
    generate = load_generator(cfg.generator)
    rejected = {"parse": 0, "rules": 0, "rouge": 0}
    rounds = 0
    with primary_appender(out) as sink:
        while len(mined) < int(cfg.num_queries) and rounds < int(cfg.max_rounds):
            pool = seeds.queries + mined
            prompts = [seeds.render(rng.sample(pool, min(int(cfg.n_shots), len(pool))))
                       for _ in range(int(cfg.batch_prompts))]
            for raw in generate(prompts, seed=int(cfg.seed) + rounds, desc=f"queries round {rounds}"):
                q = parse_query("Query:" + raw)
                if not q:
                    rejected["parse"] += 1
                elif bad_query_reason(q, rules):
                    rejected["rules"] += 1
                elif not dedupe.add_if_new(q):
                    rejected["rouge"] += 1
                elif len(mined) < int(cfg.num_queries):
                    sink.write(PromptRecord(id=f"q{len(mined)}", prompt=q, meta={"source": "self_instruct"}))
                    mined.append(q)
            rounds += 1
    generate.truncations.report()
    return {"queries": len(mined), "rounds": rounds, **{f"rejected_{k}": v for k, v in rejected.items()},
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
        generator=ConfigDict(dict(model=ConfigDict(dict(preset="llama1-30b", hf_path="", dtype="bfloat16",
                                                        param_dtype="bfloat16", remat=False, attention_impl="xla")),
                                  params="", **tokenizer_fields(), batch_size=64, bucket=64,
                                  sampling=ConfigDict(dict(temperature=1.2, top_p=0.9, max_new_tokens=64,
                                                           stop_strings=("\n",))))),
    ))


if __name__ == "__main__":
    run_job(run)
