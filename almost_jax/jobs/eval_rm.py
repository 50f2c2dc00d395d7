"""Reward-model accuracy on any comparison files (almost_jax JSONL, Anthropic HH, Static HHH).

    python -m almost_jax.jobs.eval_rm --config=configs/mini/eval_rm.py \
        --config.rm_path=work_dir/mini/reward/params --config.files='["hh_test.jsonl","hhh_eval.json"]'

Prints a table and writes the numbers as JSON to `output`.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.config_lib import llama_config
from almost_jax.data.schemas import write_json_atomic
from almost_jax.data.tokenizer import check_vocab, load_tokenizer
from almost_jax.evaluation.rm_accuracy import evaluate_file, format_table
from almost_jax.jobs.common import run_job
from almost_jax.learners.reward import RewardScorer
from almost_jax.models.llama import ScalarHeadModel


def run(cfg: ConfigDict) -> list[dict]:
    model_cfg = llama_config(cfg.model)
    tok = load_tokenizer(cfg.tokenizer)
    check_vocab(tok, model_cfg.vocab_size, int(cfg.get("allow_vocab_padding", 0)))
    params = load_model_params(cfg.rm_path, model_cfg, head="scalar")
    if "score_head" not in params:
        raise ValueError(f"{cfg.rm_path} has no score_head: it is a language model, not a reward model")
    scorer = RewardScorer(ScalarHeadModel(model_cfg), params, tok, int(cfg.max_len), int(cfg.batch_size),
                          cfg.input_template)
    results = [evaluate_file(scorer, f, cfg.format, cfg.on_error) for f in cfg.files]
    print(format_table(results))
    if cfg.output:
        write_json_atomic(cfg.output, results)
    return results


if __name__ == "__main__":
    run_job(run)
