"""Relabel the mini world's synthetic comparisons with the reward model, as AlpacaFarm's simulated
annotators label training pairs (25% of labels flipped, random order per pair).

    python -m almost_jax.jobs.annotate --config=configs/mini/annotate.py [--config.annotator.judge=prompted ...]
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.jobs.annotate import annotate_config
from almost_jax.pipeline.job_configs import family_params, world_paths


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    root = Path(mini.workdir)
    cfg = annotate_config("rm")
    cfg.pairs = str(root / "comparisons" / "comparisons.jsonl")
    cfg.output = str(root / "annotated" / "comparisons_rm.jsonl")
    cfg.annotator.update(dict(flip_prob=0.25, rm_path=str(root / "reward" / "rm"), batch_size=100))
    # the prompted judge (--config.annotator.judge=prompted): the largest vanilla model, asked A or B
    cfg.annotator.prompted.update(dict(params=str(family_params(root, "L")), tokenizer=str(world_paths(root)["tokenizer"]),
                                       max_len=256))
    cfg.annotator.prompted.model.preset = mini.family.L.preset
    return cfg
