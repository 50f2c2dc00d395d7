"""Pretrain one model of the mini family on the mini-world corpus (CPU, minutes): the pipeline's
job for member S; pick another size with --config.model.preset=mini-m / mini-l.

    python -m almost_jax.jobs.pretrain --config=configs/mini/pretrain.py
"""
from pathlib import Path

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    return job_configs.member_config(mini, "S", Path(mini.workdir) / "pretrain")
