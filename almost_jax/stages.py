"""The pipeline's stages: thin adapters from the pipeline config to each job's own function."""
from __future__ import annotations

import copy
from pathlib import Path

from ml_collections import ConfigDict

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Stage:
    name: str
    config_keys: tuple[str, ...]  # top-level config blocks this stage reads
    run: Callable[[ConfigDict, Path], dict]  # (config, workdir) -> summary dict


def world_paths(workdir_root: Path) -> dict[str, Path]:
    w = workdir_root / "world"
    return {"corpus": w / "corpus.jsonl", "tokenizer": w / "tokenizer.model", "eval_tasks": w / "eval_tasks.jsonl",
            "seed_queries": w / "seed_queries.jsonl"}


def family_params(workdir_root: Path, member: str) -> Path:
    return workdir_root / "pretrain" / member / "params"


def run_world(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.miniworld.build import build_world
    return build_world(cfg.world, out)


def member_config(cfg: ConfigDict, member: str, out: Path) -> ConfigDict:
    """The pretrain job config of one family member: the shared `pretrain` block + its overrides."""
    spec = cfg.family[member]
    job = copy.deepcopy(cfg.pretrain)
    with job.unlocked():
        job.name = f"pretrain-{member}"
        job.workdir = str(out / member)
        job.model.preset = spec.preset
        job.train.steps = int(spec.steps)
        paths = world_paths(Path(cfg.workdir))
        job.data.corpus, job.data.tokenizer = str(paths["corpus"]), str(paths["tokenizer"])
    return job


def run_pretrain(cfg: ConfigDict, out: Path) -> dict:
    from almost_jax.jobs import pretrain
    from almost_jax.jobs.common import read_manifest
    summary = {}
    for member in cfg.family.keys():
        job = member_config(cfg, member, out)
        pretrain.run(job)
        summary[f"{member}_loss"] = (read_manifest(Path(job.workdir) / "manifest.json") or {}).get("final_loss")
    return summary


STAGES = [
    Stage("world", ("world",), run_world),
    Stage("pretrain", ("family", "pretrain"), run_pretrain),
]
