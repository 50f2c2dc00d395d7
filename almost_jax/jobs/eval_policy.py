"""A policy on ALMoST's benchmarks from local files: Static HHH and TruthfulQA MC1.

    python -m almost_jax.jobs.eval_policy --config=configs/mini/eval_policy.py \
        --config.params=work_dir/mini/ppo/params --config.files='["hhh_eval.json","truthfulqa_mc1.jsonl"]'

Prints a table and writes the numbers as JSON to `output` (atomically). See
`evaluation/policy_benchmarks.py` for the scoring and `data/prompts/` for the question wordings.
"""
from __future__ import annotations

import json

from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.source import resolve
from almost_jax.data.schemas import atomic_open
from almost_jax.evaluation.lm_scoring import LMScorer, TextScorer
from almost_jax.evaluation.policy_benchmarks import evaluate_file, format_table, load_judge_prompt
from almost_jax.jobs.common import run_job
from almost_jax.models.llama import CausalLM


def judge_prompts(cfg: ConfigDict) -> dict:
    """The prompt each benchmark needs, loaded (and checked) before any model work."""
    tqa = cfg.truthfulqa
    if tqa.mode == "true_false":
        tqa_prompt = load_judge_prompt(tqa.prompt, ("question", "answer"))
    else:
        tqa_prompt = load_judge_prompt(tqa.loglik_prompt, ("question",))
    return {"static_hhh": load_judge_prompt(cfg.static_hhh.prompt, ("context", "response_a", "response_b")),
            "truthfulqa": tqa_prompt}


def run(cfg: ConfigDict) -> list[dict]:
    if not cfg.files:
        raise ValueError("no benchmark files: set --config.files='[\"hhh_eval.json\", \"truthfulqa_mc1.jsonl\"]'")
    prompts = judge_prompts(cfg)
    src = resolve(cfg, "params")
    model_cfg, tok = src.model, src.tokenizer
    params = load_model_params(src.params, model_cfg)
    lm = LMScorer(CausalLM(model_cfg), params, tok.pad_id, int(cfg.max_len), int(cfg.batch_size), int(cfg.bucket))
    scorer = TextScorer(lm, tok, bool(cfg.add_bos) and tok.add_bos)  # BOS only where the model uses one
    results = []
    for path in cfg.files:
        lm.n_truncated = 0
        result = evaluate_file(path, scorer, cfg.format, prompts, tuple(cfg.static_hhh.answers),
                               cfg.truthfulqa.mode, cfg.truthfulqa.true_text)
        results.append({**result, "truncated_inputs": lm.n_truncated})
    print(format_table(results), flush=True)
    if cfg.output:
        with atomic_open(cfg.output) as f:
            json.dump({"params": src.params, "max_len": lm.max_len, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    run_job(run)
