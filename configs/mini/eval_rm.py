"""Reward-model accuracy on comparison files (formats: comparisons | hh | static_hhh | auto); by
default the pipeline's RM on its oracle-labelled held-out pairs in work_dir/mini.

    python -m almost_jax.jobs.eval_rm --config=configs/mini/eval_rm.py --config.files='["hh.jsonl","hhh_eval.json"]'
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.jobs.eval_rm import eval_rm_config


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    root = Path(mini.workdir)
    cfg = eval_rm_config()
    cfg.rm_path = str(root / "reward" / "rm")
    cfg.files = (str(root / "comparisons" / "gold_pairs.jsonl"),)
    cfg.output = str(root / "eval_rm.json")
    return cfg
