"""Synthetic comparisons on the mini world: the pipeline's `comparisons` stage job (four prompted
setups of the pretrained family, ranked A > B > C > D). Needs the pipeline's world, pretrain and
queries outputs in work_dir/mini.

    python -m almost_jax.jobs.comparisons --config=configs/mini/comparisons.py
"""
from pathlib import Path

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    return job_configs.comparisons_job(mini, Path(mini.workdir) / "comparisons")
