"""What every job entry point does: logging, multi-host start-up, absl config flags, a manifest."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
from ml_collections import ConfigDict


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def config_hash(cfg: ConfigDict) -> str:
    return hashlib.sha256(cfg.to_json(sort_keys=True).encode()).hexdigest()[:16]


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_manifest(path: str | Path, cfg: ConfigDict, **counts) -> None:
    """A job's record of what it produced from which config; written atomically by process 0."""
    if jax.process_index() != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"config_hash": config_hash(cfg), "code_version": code_version(), "finished_at": time.time(),
            "config": json.loads(cfg.to_json()), **counts}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2, default=str))
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_job(job_fn, default_config: str | None = None, extra_flags=None) -> None:
    """Entry point of every job: `--config=<file>` + `--config.key=value` overrides, then job_fn(cfg).

    Flags are defined here, not at import time, so jobs can import each other freely.
    """
    from absl import app, flags
    from ml_collections import config_flags

    from almost_jax.parallel import maybe_initialize_distributed

    config = config_flags.DEFINE_config_file("config", default_config, "job config file (configs/...py)",
                                             lock_config=True)
    extras = extra_flags() if extra_flags else {}

    def main(argv):
        del argv
        setup_logging()
        from almost_jax.checkpoints.source import follow_params_from_command_line
        follow_params_from_command_line(config.value, config_flags.get_override_values(flags.FLAGS[config.name]))
        maybe_initialize_distributed(config.value)
        job_fn(config.value, **{k: f.value for k, f in extras.items()})

    app.run(main)
