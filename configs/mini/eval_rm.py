"""Reward-model accuracy on comparison files (formats: comparisons | hh | static_hhh | auto)."""
from ml_collections import ConfigDict

from almost_jax.config_lib import model_block
from almost_jax.learners.reward import DEFAULT_TEMPLATE


def get_config():
    return ConfigDict(dict(
        model=model_block(preset="mini-l"), rm_path="work_dir/mini/reward/params",
        tokenizer="work_dir/mini/world/tokenizer.model", allow_vocab_padding=0,
        files=["work_dir/mini/comparisons/heldout.jsonl"], format="auto", on_error="raise",
        max_len=128, batch_size=64, input_template=DEFAULT_TEMPLATE, output="work_dir/mini/eval_rm.json",
    ))
