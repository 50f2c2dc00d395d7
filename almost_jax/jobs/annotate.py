"""Label comparison pairs with a simulated annotator (evaluation/annotators.py): the reward model,
a prompted local model, or, as a marked control only, the mini world's gold oracle; with optional
label noise (`annotator.flip_prob`) and a random order per pair.

    python -m almost_jax.jobs.annotate --config=configs/mini/annotate.py
    python -m almost_jax.jobs.annotate --config=configs/mini/annotate.py --config.annotator.judge=prompted \\
        --config.annotator.prompted.params=work_dir/mini/pretrain/L/params --config.annotator.flip_prob=0.25

`pairs`: a ComparisonRecord JSONL whose chosen / rejected are read as an unlabelled pair (a, b);
`output`: the pairs the annotator did not tie, chosen = its pick (ids kept, or the line number);
the manifest counts ties, identical replies, and how often the annotator agrees with the input's
own labels.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.data.schemas import ComparisonRecord, load_jsonl, write_jsonl_atomic
from almost_jax.evaluation.annotators import annotator_config, build_annotator, label_pairs
from almost_jax.jobs.common import run_job, write_manifest

log = logging.getLogger(__name__)


def run(cfg: ConfigDict) -> dict:
    pairs = load_jsonl(cfg.pairs, ComparisonRecord, cfg.on_error)[: int(cfg.max_pairs) or None]
    if not pairs:
        raise ValueError(f"no comparison pairs in {cfg.pairs}")
    annotator = build_annotator(cfg.annotator)
    if annotator.control:
        log.warning("labelling with the gold oracle: a control run, never the method (every record is marked)")
    ids = [p.id if p.id is not None else f"line{i}" for i, p in enumerate(pairs)]
    records, counts = label_pairs(annotator, ids, [p.prompt for p in pairs], [p.chosen for p in pairs],
                                  [p.rejected for p in pairs], ("input_chosen", "input_rejected"))
    write_jsonl_atomic(cfg.output, records)
    summary = {**counts, "agrees_with_input": counts["a_preferred"], "judge": annotator.name,
               "flip_prob": annotator.flip_prob, "control": annotator.control}
    del summary["a_preferred"]
    write_manifest(Path(cfg.output).with_suffix(".manifest.json"), cfg, **summary)
    log.info("annotate: %s", summary)
    return summary


def annotate_config(judge: str = "rm") -> ConfigDict:
    return ConfigDict(dict(pairs="", output="", max_pairs=0, on_error="raise", annotator=annotator_config(judge)))


if __name__ == "__main__":
    run_job(run)
