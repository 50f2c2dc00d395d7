"""SPA on the mini world: the pipeline's `spa` stage job, from the RM-guided SFT policy in
work_dir/mini: DPO on a seed of oracle-labelled pairs (standing in for SPA's small human-labelled
seed; the stage writes work_dir/mini/spa/seed_pairs.jsonl), then rounds of pairs labelled by the
policy's implicit reward on the RL queries.

    python -m almost_jax.jobs.spa --config=configs/mini/spa.py [--config.spa.iterations=3]
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.jobs.preference_config import add_preference_blocks
from almost_jax.pipeline import preference_stages


def get_config():
    mini = add_preference_blocks(load_config_file(Path(__file__).resolve().parents[1] / "mini.py"))
    out = Path(mini.workdir) / "spa"
    return preference_stages.spa_job(mini, out, out / "seed_pairs.jsonl")
