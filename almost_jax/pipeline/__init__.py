"""The whole ALMoST pipeline: `runner` (stages in order, each resumable from its manifest),
`stages` (what each stage runs), `job_configs` (each job's config derived from the pipeline
config) and `report` (policy scores and the report stage)."""
from almost_jax.pipeline.runner import chain_hashes, cli, prepare_stage_dir, run_pipeline, summary_line

__all__ = ["chain_hashes", "cli", "prepare_stage_dir", "run_pipeline", "summary_line"]
