"""The preference stages' job configs come from the pipeline config; the oracle-labelled control
relabels pairs as the oracle scores them; SPA's warm-up column follows the trainer's batch order."""
from pathlib import Path

import numpy as np
import pytest

from almost_jax.config_lib import load_config_file
from almost_jax.data.lm_data import RowBatches
from almost_jax.data.schemas import ComparisonRecord, Provenance
from almost_jax.jobs.preference_config import add_preference_blocks
from almost_jax.pipeline import preference_stages as S

REPO = Path(__file__).resolve().parents[1]


def test_jobs_start_from_the_sft_policy_with_the_blocks_values():
    cfg = add_preference_blocks(load_config_file(REPO / "configs" / "mini.py", ["workdir=/w"]))
    cfg.dpo.beta, cfg.dpo.loss, cfg.spa.alpha, cfg.cut.threshold = 0.3, "ipo", 0.2, 1.2
    dpo = S.dpo_job(cfg, Path("/w/dpo"), Path("/w/pairs.jsonl"))
    spa = S.spa_job(cfg, Path("/w/spa"), Path("/w/seed.jsonl"))
    cut = S.cut_job(cfg, Path("/w/cut"), Path("/w/j.jsonl"))
    for job in (dpo, spa, cut):
        assert job.init_from == "/w/sft/seed_0/rm/params" and job.model.preset == cfg.family[cfg.sft_member].preset
        assert job.data.tokenizer == "/w/world/tokenizer.model"
    assert (dpo.dpo.beta, dpo.dpo.loss, dpo.data.train, dpo.workdir) == (0.3, "ipo", "/w/pairs.jsonl", "/w/dpo")
    assert (spa.spa.alpha, spa.data.prompts, spa.data.seed_pairs) == (0.2, "/w/queries/rl.jsonl", "/w/seed.jsonl")
    assert spa.spa.prompts_per_iteration == tuple(cfg.spa.prompts_per_iteration)
    assert (cut.cut.threshold, cut.data.train, cut.optimizer.lr) == (1.2, "/w/j.jsonl", cfg.cut.lr)


def _pair(chosen, rejected):
    return ComparisonRecord(prompt="\n\nHuman: What is 3 + 5?", chosen=chosen, rejected=rejected, id=f"{chosen}>{rejected}",
                            provenance=Provenance("A", "D"))


def test_oracle_labelled_control_follows_the_oracle():
    out = S.oracle_relabelled([_pair("8", "7"), _pair("7", "8"), _pair("1", "2")])  # scores 1, 0.5; "1" and "2" tie at 0
    assert [(r.chosen, r.rejected, r.provenance.filters["flipped"]) for r in out] == [("8", "7", False), ("8", "7", True)]
    assert (out[1].provenance.chosen_setup, out[1].provenance.rejected_setup) == ("D", "A")
    assert out[0].provenance.filters["label"] == "oracle (control)"


def test_spa_warmup_column_follows_the_batch_order():
    from almost_jax.jobs.spa import refine_alpha_rows
    from ml_collections import ConfigDict
    arrays = {"chosen_input_ids": np.zeros((8, 3), np.int32)}
    job = ConfigDict(dict(train=dict(steps=4, batch_size=2)))
    alpha = refine_alpha_rows(ConfigDict(dict(alpha=0.1, warmup_fraction=0.5)), seed=7)(arrays, job)["refine_alpha"]
    batches = RowBatches(arrays, 2, seed=7)
    warm = np.concatenate([batches.global_indices(0), batches.global_indices(1)])
    np.testing.assert_allclose(alpha[warm], 0.0)
    np.testing.assert_allclose(np.delete(alpha, warm), 0.1)


@pytest.mark.slow
def test_stages_run_on_a_toy_workdir(tmp_path):
    """The four stage runners end to end on a toy world (untrained mini-s as the "SFT" policy, pairs
    made from the tasks' answers): each writes its policy and a `policies` entry the report reads."""
    import jax
    from almost_jax.checkpoints.orbax_io import save_params
    from almost_jax.data.schemas import PromptRecord, load_jsonl, write_jsonl_atomic
    from almost_jax.miniworld.build import build_world
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import init_params
    cfg = add_preference_blocks(load_config_file(REPO / "configs" / "mini.py", [f"workdir={tmp_path}"]))
    cfg.world.update(dict(n_docs=300, eval_per_family=2, seed_queries_per_family=8))
    cfg.sampling_batch_size = 16
    build_world(cfg.world, tmp_path / "world")
    save_params(tmp_path / "sft" / "seed_0" / "rm" / "params", init_params(get_config(cfg.family[cfg.sft_member].preset),
                                                                jax.random.key(0)))
    seeds = load_jsonl(tmp_path / "world" / "seed_queries.jsonl", PromptRecord)
    write_jsonl_atomic(tmp_path / "queries" / "rl.jsonl", seeds)
    write_jsonl_atomic(tmp_path / "comparisons" / "comparisons.jsonl", [
        ComparisonRecord(prompt=f"\n\nHuman: {q.prompt}", chosen=q.meta["answer"], rejected=wrong, id=f"{q.id}-{i}",
                         provenance=Provenance("A", "D"))
        for i, q in enumerate(seeds) for wrong in ("No.", "Human: what?")])
    cfg.dpo.update(dict(batch_size=8, epochs=0.5))
    cfg.spa.update(dict(seed_pairs=16, iterations=1, prompts_per_iteration=(16,), batch_size=8, seed_epochs=1.0))
    cfg.cut.update(dict(batch_size=4, epochs=1.0, positive_ratio=1.0))
    for name, run in (("dpo", S.run_dpo), ("dpo_oracle", S.run_dpo_oracle), ("spa", S.run_spa), ("cut", S.run_cut)):
        summary = run(cfg, tmp_path / name)
        (entry,) = summary["policies"].values()
        assert Path(entry["params"]).exists() and 0.0 <= summary["policy_score"] <= 1.0, (name, summary)
    assert summary["judgments"] > 0 and summary["negative"] > 0
