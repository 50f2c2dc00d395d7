"""Reward-model accuracy on any comparison files (almost_jax JSONL, Anthropic HH, Static HHH).

    python -m almost_jax.jobs.eval_rm --config=configs/mini/eval_rm.py \
        --config.rm_path=work_dir/mini/reward/rm --config.files='["hh_test.jsonl","hhh_eval.json"]'

The RM is read with its scoring contract (`rm_path`: the directory train_rm wrote). Prints a table
and writes the numbers as JSON to `output`, with the count of RM inputs left-truncated to the
contract's max_len per file. Accuracy compares raw scores (normalisation cannot
change an order).
"""
from __future__ import annotations

from ml_collections import ConfigDict

from almost_jax.data.schemas import write_json_atomic
from almost_jax.evaluation.rm_accuracy import evaluate_file, format_table
from almost_jax.jobs.common import run_job
from almost_jax.learners.reward import load_reward_model


def run(cfg: ConfigDict) -> list[dict]:
    scorer = load_reward_model(cfg.rm_path, batch_size=int(cfg.batch_size))
    results = []
    for f in cfg.files:
        before = scorer.truncations.truncated
        results.append({**evaluate_file(scorer, f, cfg.format, cfg.on_error),
                        "truncated_inputs": scorer.truncations.truncated - before})
    scorer.truncations.report()
    print(format_table(results))
    if cfg.output:
        write_json_atomic(cfg.output, results)
    return results


def eval_rm_config() -> ConfigDict:
    return ConfigDict(dict(rm_path="", files=(), format="auto", on_error="raise", batch_size=64, output=""))


if __name__ == "__main__":
    run_job(run)
