"""Queries on the mini world: the pipeline's `queries` stage for one set (default: the RM set).

    python -m almost_jax.jobs.queries --config=configs/mini/queries.py [--config.output=...]
"""
from pathlib import Path

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    return job_configs.queries_job(mini, Path(mini.workdir) / "queries", "rm")
