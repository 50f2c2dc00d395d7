"""DPO on the mini world: the pipeline's `dpo` stage job, from the RM-guided SFT policy in
work_dir/mini (also the reference) on the synthetic comparisons (CPU, a few minutes).

    python -m almost_jax.jobs.dpo --config=configs/mini/dpo.py [--config.dpo.loss=ipo] [--config.dpo.label_smoothing=0.1]

The oracle-labelled control (`dpo_oracle` stage) trains the same job on
work_dir/mini/dpo_oracle/oracle_pairs.jsonl: `--config.data.train=...`.
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.jobs.preference_config import add_preference_blocks
from almost_jax.pipeline import preference_stages


def get_config():
    mini = add_preference_blocks(load_config_file(Path(__file__).resolve().parents[1] / "mini.py"))
    root = Path(mini.workdir)
    return preference_stages.dpo_job(mini, root / "dpo", root / "comparisons" / "comparisons.jsonl")
