"""CUT on the mini world: the pipeline's `cut` stage job, from the RM-guided SFT policy in
work_dir/mini, on (instruction, SFT reply, judgment) triples whose judgments are the oracle's
explanations of what is wrong (the supervision CUT is defined to use, like a human critique; the
stage writes work_dir/mini/cut/judgments.jsonl from the RL queries).

    python -m almost_jax.jobs.cut --config=configs/mini/cut.py [--config.cut.threshold=1.2]
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.jobs.preference_config import add_preference_blocks
from almost_jax.pipeline import preference_stages


def get_config():
    mini = add_preference_blocks(load_config_file(Path(__file__).resolve().parents[1] / "mini.py"))
    out = Path(mini.workdir) / "cut"
    return preference_stages.cut_job(mini, out, out / "judgments.jsonl")
