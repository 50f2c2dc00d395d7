"""RM-guided self-play on the mini world: the pipeline's `rmsp` stage job (best of N by the RM).
Needs the pipeline's outputs up to `reward` in work_dir/mini.

    python -m almost_jax.jobs.rmsp --config=configs/mini/rmsp.py [--config.selfplay.n_candidates=8]
"""
from pathlib import Path

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    seed = int(mini.seeds[0])  # the pipeline runs every seed of `seeds`; this job, the first
    return job_configs.rmsp_job(mini, job_configs.seed_dir(Path(mini.workdir), "rmsp", seed) / "rm", "rm",
                                int(mini.rmsp.n_candidates), seed)
