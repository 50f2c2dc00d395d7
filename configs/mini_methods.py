"""The mini pipeline with every method stage enabled: the table of issue 18 (gold-oracle score, RM
score, win-rates vs the prompted baseline, all from the same SFT start and the same held-out tasks)
for SFT, best-of-1/4/16, expert iteration, PPO, RLOO, GRPO and, once the `methods` branch is merged,
DPO on synthetic pairs, DPO on oracle-labelled pairs (a control), Selfie/SPA and CUT.

    python -m almost_jax.pipeline --config=configs/mini_methods.py

Same workdir as configs/mini.py: the default stages already finished there are reused (their
hashes do not change when methods are enabled) and only the method stages and the report run.
Run time of the method stages on 2 CPU cores: not yet measured end to end (see the report's
stage manifests, `seconds`).
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file

OWN = ("best_of_n", "expert_iteration", "rloo", "grpo")
# DPO / SPA / CUT stages and their config blocks come from almost_jax/pipeline/preference_stages.py,
# which arrives with the `methods` branch; until it is merged only OWN run.
PREFERENCE = ("dpo", "dpo_oracle", "spa", "cut")


def get_config():
    cfg = load_config_file(Path(__file__).resolve().parent / "mini.py")
    methods = OWN
    try:
        from almost_jax.pipeline.preference_stages import add_preference_blocks  # from the `methods` branch
    except ImportError:
        add_preference_blocks = None
    if add_preference_blocks is not None:
        add_preference_blocks(cfg)
        methods = OWN + PREFERENCE
    cfg.methods = methods
    return cfg
