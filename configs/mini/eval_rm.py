"""Reward-model accuracy on comparison files (formats: comparisons | hh | static_hhh | auto); by
default the pipeline's RM on its oracle-labelled held-out pairs in work_dir/mini.

    python -m almost_jax.jobs.eval_rm --config=configs/mini/eval_rm.py --config.files='["hh.jsonl","hhh_eval.json"]'
"""
from pathlib import Path

from ml_collections import ConfigDict

from almost_jax.pipeline import job_configs
from almost_jax.config_lib import load_config_file, model_block
from almost_jax.data.rm_data import DEFAULT_TEMPLATE


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    root = Path(mini.workdir)
    return ConfigDict(dict(
        model=model_block(preset=mini.family[mini.reward_init_member].preset),
        rm_path=str(root / "reward" / "rm" / "params"), tokenizer=str(job_configs.world_paths(root)["tokenizer"]),
        allow_vocab_padding=0, files=(str(root / "comparisons" / "gold_pairs.jsonl"),), format="auto",
        on_error="raise", max_len=int(mini.reward.train.seq_len), batch_size=64, input_template=DEFAULT_TEMPLATE,
        output=str(root / "eval_rm.json"),
    ))
