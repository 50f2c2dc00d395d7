"""SFT of the smallest mini model on the RM-selected self-play dialogues in work_dir/mini (CPU, a
minute).

    python -m almost_jax.jobs.sft --config=configs/mini/sft.py [--config.data.train=dialogues.jsonl]
"""
from pathlib import Path

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    seed = int(mini.seeds[0])  # the pipeline runs every seed of `seeds`; this job, the first
    return job_configs.sft_job(mini, job_configs.seed_dir(Path(mini.workdir), "sft", seed), "rm", seed)
