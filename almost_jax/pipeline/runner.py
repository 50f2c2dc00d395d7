"""The whole ALMoST pipeline on one config, each stage resumable from its manifest.

    python -m almost_jax.pipeline --config=configs/mini.py [--config.key=value ...] [--stages=a,b]
    python -m almost_jax.pipeline --config=configs/smollm2_cpu.py   # stage_list=real_text: one real model

A stage is skipped when `<workdir>/<stage>/manifest.json` exists with the same chain hash: the
hash of the stage's own config blocks and of every earlier stage's hash. Editing a block reruns
that stage and everything after it; a crash mid-stage reruns only that stage, which itself
resumes from its checkpoints / streamed outputs.

Optional stages (the related methods: best-of-n, expert iteration, RLOO, GRPO, DPO, ...) run only
when named in `cfg.methods`. Each hangs off the default chain (its hash: the stages before it and
its own blocks, not the other methods), and the report's hash takes in every enabled one; so with
`methods=()` every hash is what it is without optional stages, and enabling, editing or dropping
one method reruns that method and the report, nothing else.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

from absl import flags
from ml_collections import ConfigDict

from almost_jax.data.errors import reset_skipped
from almost_jax.jobs.common import read_manifest, run_job, write_manifest

log = logging.getLogger("almost_jax.pipeline")


STAGE_LISTS = ("mini", "real_text")


def _stages(cfg: ConfigDict):
    """The config's `stage_list` (default "mini"): the mini world's stages, or the real-text ones
    (one pretrained checkpoint, real English; pipeline/real_stages.py)."""
    name = cfg.get("stage_list", "mini")
    if name == "mini":
        from almost_jax.pipeline import stages as S  # imported lazily: stages pull in the whole package
        return S.STAGES
    if name == "real_text":
        from almost_jax.pipeline import real_stages
        return real_stages.STAGES
    raise ValueError(f"stage_list must be one of {STAGE_LISTS}, got {name!r}")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def chain_hashes(cfg: ConfigDict, stages: Sequence) -> dict[str, str]:
    """stage -> hash of its config blocks and of the default stages before it; an optional stage's
    hash is not passed on to the next stage but folded into the next default one's (the report)."""
    out, prev, branches = {}, "", ""
    for st in stages:
        blob = json.dumps({k: json.loads(cfg[k].to_json()) if isinstance(cfg[k], ConfigDict) else cfg[k]
                           for k in st.config_keys}, sort_keys=True)
        if st.optional:
            out[st.name] = _sha(prev + st.name + blob)
            branches += out[st.name]
            continue
        prev = out[st.name] = _sha(prev + branches + st.name + blob)
        branches = ""
    return out


def active_stages(cfg: ConfigDict, stages: Sequence) -> list:
    """The default stages plus the optional ones named in `cfg.methods`, in the stage order."""
    methods = tuple(cfg.get("methods", ()))
    optional = [s.name for s in stages if s.optional]
    unknown = sorted(set(methods) - set(optional))
    if unknown:
        raise ValueError(f"cfg.methods names {unknown}, which are not optional stages; optional stages: {optional}")
    return [s for s in stages if not s.optional or s.name in methods]


def prepare_stage_dir(stage_dir: Path, chain_hash: str) -> None:
    """Partial outputs of an interrupted run with the same config are kept (the stage resumes
    from them); outputs written under another config are stale and are removed (a stage linked
    from another run is unlinked, never cleared)."""
    marker = stage_dir / ".chain_hash"
    if stage_dir.is_symlink():
        log.info("stage %s: config changed, unlinking %s", stage_dir.name, stage_dir)
        stage_dir.unlink()
    if stage_dir.exists() and (not marker.exists() or marker.read_text().strip() != chain_hash):
        log.info("stage %s: config changed, clearing %s", stage_dir.name, stage_dir)
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(chain_hash)


def summary_line(name: str, summary: dict, seconds: float, skipped: bool) -> str:
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
                      if not isinstance(v, (dict, list)))
    return f"[{name}] {'skipped (done)' if skipped else f'{seconds:.0f}s'}: {shown}"


def link_finished_stage(stage_dir: Path, other_run: Path, chain_hash: str) -> bool:
    """Link `other_run`'s directory of this stage into this run when it finished with the same chain
    hash (same config for it and every stage before it), so a variant run (e.g. the control) reuses
    what it shares with the default run instead of recomputing it."""
    other = other_run / stage_dir.name
    manifest = read_manifest(other / "manifest.json")
    if stage_dir.exists() or stage_dir.is_symlink() or not manifest or manifest.get("chain_hash") != chain_hash:
        return False
    stage_dir.parent.mkdir(parents=True, exist_ok=True)
    stage_dir.symlink_to(other.resolve(), target_is_directory=True)
    log.info("stage %s: linked from %s", stage_dir.name, other)
    return True


def run_pipeline(cfg: ConfigDict, only: Sequence[str] = ()) -> dict[str, dict]:
    workdir = Path(cfg.workdir)
    reuse = str(cfg.get("reuse_from", "") or "")
    every = _stages(cfg)
    stages = active_stages(cfg, every)
    unknown = set(only) - {s.name for s in stages}
    if unknown:
        off = sorted(unknown & {s.name for s in every})
        hint = f" ({off} are optional: add them to --config.methods)" if off else ""
        raise ValueError(f"unknown stage(s) {sorted(unknown)}{hint}; stages: {[s.name for s in stages]}")
    hashes = chain_hashes(cfg, stages)
    results = {}
    for st in stages:
        if only and st.name not in only:
            continue
        if reuse:
            link_finished_stage(workdir / st.name, Path(reuse), hashes[st.name])
        manifest_path = workdir / st.name / "manifest.json"
        manifest = read_manifest(manifest_path)
        if manifest and manifest.get("chain_hash") == hashes[st.name]:
            results[st.name] = manifest.get("summary", {})
            print(summary_line(st.name, results[st.name], 0, True), flush=True)
            continue
        prepare_stage_dir(workdir / st.name, hashes[st.name])
        reset_skipped()  # the stage's manifest records what its readers skip
        t0 = time.time()
        summary = st.run(cfg, workdir / st.name)
        seconds = time.time() - t0
        write_manifest(manifest_path, cfg, chain_hash=hashes[st.name], stage=st.name, seconds=seconds,
                       summary=summary)
        results[st.name] = summary
        print(summary_line(st.name, summary, seconds, False), flush=True)
    return results


def cli():
    run_job(lambda cfg, stages: run_pipeline(cfg, stages), "configs/mini.py",
            lambda: {"stages": flags.DEFINE_list("stages", [], "run only these stages (default: all, in order)")})

