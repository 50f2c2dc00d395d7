"""ALMoST stage 1b: synthetic comparisons from ranked sampler setups.

    python -m almost_jax.jobs.comparisons --config=configs/mini/comparisons.py

For every query, each setup (a model checkpoint + prompt template + number of demonstrations +
sampling parameters) answers once. Each model is loaded once and all queries are batched
through it; responses stream to `responses/<setup>.jsonl`, so a killed job resumes where it
stopped. Responses breaking a rule are marked BAD (with the rule's name); pairs are built as the
official code does (see synthetic/pairs.py), with and without the heuristic length filter.
Outputs: comparisons.jsonl (filter on), comparisons_nofilter.jsonl, report.json.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.data.schemas import (ComparisonRecord, PromptRecord, Provenance, load_jsonl, read_jsonl,
                                     write_json_atomic, write_jsonl_atomic)
from almost_jax.data.templates import load_prompt_file, prompt_path
from almost_jax.jobs.common import run_job, write_manifest
from almost_jax.parallel.hosts import check_same_on_all_hosts, is_primary, primary_appender
from almost_jax.synthetic.generation import load_generator
from almost_jax.synthetic.pairs import PairStats, build_pairs, flatten
from almost_jax.synthetic.rules import ResponseRules, bad_response_reason, parse_response

log = logging.getLogger(__name__)


def setup_prompts(setup: ConfigDict, queries: list[PromptRecord]) -> list[str]:
    path = setup.template if Path(setup.template).is_file() else prompt_path(setup.template)
    template = load_prompt_file(path)
    return [template.render(int(setup.n_shots), q.prompt) for q in queries]


def sample_setup(name: str, setup: ConfigDict, queries: list[PromptRecord], out: Path, rules: ResponseRules,
                 seed: int) -> int:
    """Stream this setup's responses; skip queries already answered by an earlier (killed) run.
    Returns how many of this run's prompts were left-truncated to fit the model."""
    done = {(r["id"], r.get("query")) for r in read_jsonl(out, None, on_error="skip")} if out.exists() else set()
    todo = [q for q in queries if (q.id, q.prompt) not in done]
    check_same_on_all_hosts(" ".join(q.id for q in todo), f"unanswered queries in {out}")
    if not todo:
        return 0
    log.info("setup %s: %d of %d queries to answer", name, len(todo), len(queries))
    generate = load_generator(setup)
    prompts = setup_prompts(setup, todo)
    with primary_appender(out) as sink:
        for q, raw in zip(todo, generate(prompts, seed=seed, desc=name)):
            response = parse_response(raw, separator=setup.get("separator", "\n\n-----"))
            reason = bad_response_reason(response, rules)
            sink.write({"id": q.id, "query": q.prompt, "setup": name, "raw": raw, "response": response, "bad": reason})
    generate.truncations.report()
    return generate.truncations.truncated


def load_responses(path: Path, queries=None) -> dict[str, dict]:
    """Latest response per query id (only those answering the query's current text)."""
    current = {q.id: q.prompt for q in queries} if queries is not None else None
    return {r["id"]: r for r in read_jsonl(path, None, on_error="skip")
            if current is None or current.get(r["id"]) == r.get("query")}


def build_comparisons(queries, responses: dict[str, dict[str, dict]], rubric, length_filter: bool):
    """Pairs exactly as the official code builds them; identical (chosen == rejected) pairs are then
    dropped, as its RM dataset does, and counted."""
    stats, records, identical = PairStats(), [], 0
    for q in queries:
        per_setup = {name: (None if (r := responses[name].get(q.id)) is None or r["bad"] else r["response"])
                     for name in responses}
        for i, p in enumerate(build_pairs(per_setup, rubric, length_filter, stats)):
            if p.chosen == p.rejected:
                identical += 1
                continue
            records.append(ComparisonRecord(
                prompt=chat_prompt(q.prompt), chosen=p.chosen, rejected=p.rejected, id=f"{q.id}-{i}",
                provenance=Provenance(chosen_setup=p.chosen_setup, rejected_setup=p.rejected_setup,
                                      filters={"length_filter": length_filter,
                                               "chosen_long_enough": p.chosen_long_enough}),
                meta={"query_id": q.id, **{k: v for k, v in q.meta.items() if k in ("family", "difficulty")}}))
    return records, stats, identical


def chat_prompt(query: str) -> str:
    """The RM's `{prompt}`: the dialogue so far without the final assistant label."""
    return f"\n\nHuman: {query}"


def run(cfg: ConfigDict) -> dict:
    out = Path(cfg.workdir)
    (out / "responses").mkdir(parents=True, exist_ok=True)
    queries = load_jsonl(cfg.queries, PromptRecord, cfg.on_error)[: int(cfg.max_queries) or None]
    rubric = [list(e) if isinstance(e, (list, tuple)) else e for e in cfg.rubric]
    names = flatten(rubric)
    missing = [n for n in names if n not in cfg.setups]
    if missing:
        raise KeyError(f"rubric names setups {missing} that config.setups does not define")
    rules = ResponseRules.from_config(cfg.rules)
    truncated = {name: sample_setup(name, cfg.setups[name], queries, out / "responses" / f"{name}.jsonl", rules,
                                    int(cfg.seed)) for name in names}
    responses = {n: load_responses(out / "responses" / f"{n}.jsonl", queries) for n in names}
    bad = Counter(r["bad"] for per in responses.values() for r in per.values() if r["bad"])
    report = {"queries": len(queries), "responses": sum(len(v) for v in responses.values()),
              "bad_responses": sum(bad.values()), "bad_by_rule": dict(bad),
              "truncated_prompts": truncated}  # per setup, prompts of this run cut to fit the model
    for flag, fname in ((True, "comparisons.jsonl"), (False, "comparisons_nofilter.jsonl")):
        records, stats, identical = build_comparisons(queries, responses, rubric, flag)
        if is_primary():
            write_jsonl_atomic(out / fname, records)
        key = "with_filter" if flag else "without_filter"
        report[key] = {"pairs": stats.pairs, "queries_lt2_survivors": stats.queries_lt2_survivors,
                       "removed_by_length_filter": stats.skipped_by_length_filter, "skipped_ties": stats.skipped_ties,
                       "dropped_identical": identical, "written": len(records)}
    report["pairs_by_setups"] = dict(Counter(f"{r.provenance.chosen_setup}>{r.provenance.rejected_setup}"
                                             for r in load_jsonl(out / "comparisons.jsonl", ComparisonRecord)))
    if is_primary():
        write_json_atomic(out / "report.json", report)
    log.info("comparisons: %s", json.dumps(report))
    summary = {"queries": report["queries"], "responses": report["responses"], "bad": report["bad_responses"],
               "pairs": report["with_filter"]["written"], "pairs_nofilter": report["without_filter"]["written"],
               "removed_by_length_filter": report["with_filter"]["removed_by_length_filter"],
               "truncated_prompts": sum(truncated.values())}
    write_manifest(out / "manifest.json", cfg, **summary)
    return summary


if __name__ == "__main__":
    run_job(run)
