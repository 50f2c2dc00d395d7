"""What every job entry point does: logging, multi-host start-up, absl config flags, a manifest."""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import jax
from ml_collections import ConfigDict

from almost_jax.checkpoints.orbax_io import CheckpointError
from almost_jax.config_lib import ConfigKeyError, diagnose_override_flags
from almost_jax.data.errors import InputError, reset_skipped, skipped_records
from almost_jax.data.schemas import atomic_open
from almost_jax.train.finite import NonFiniteError
from almost_jax.train.resume import ResumeError

# Errors in what the user gave, whose message says all (no traceback needed).
USER_ERRORS = (InputError, ConfigKeyError, ResumeError, NonFiniteError, CheckpointError)


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
    """A job's record of what it produced from which config, and of the input records its readers
    skipped (`skipped_records`: {file: count}, see data.errors); written atomically by process 0."""
    if jax.process_index() != 0:
        return
    body = {"config_hash": config_hash(cfg), "code_version": code_version(), "finished_at": time.time(),
            "config": json.loads(cfg.to_json()), "skipped_records": skipped_records(), **counts}
    with atomic_open(path) as f:
        f.write(json.dumps(body, indent=2, default=str))


def read_manifest(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_job(job_fn, default_config: str | None = None, extra_flags=None) -> None:
    """Entry point of every job: `--config=<file>` + `--config.key=value` overrides, then job_fn(cfg).

    Flags are defined here, not at import time, so jobs can import each other freely. Errors in
    what the user gave (an unknown config key, bad input files, a checkpoint under another config,
    a diverged run) end the job with their one-line message and exit status 1, not a traceback.
    """
    from absl import app, flags
    from ml_collections import config_flags

    from almost_jax.parallel import maybe_initialize_distributed

    config = config_flags.DEFINE_config_file("config", default_config, "job config file (configs/...py)",
                                             lock_config=True)
    extras = extra_flags() if extra_flags else {}

    def parse_flags(argv):
        try:
            return app.parse_flags_with_usage(argv)
        except (AttributeError, KeyError):  # ml_collections' answer to an unknown --config.key
            problem = diagnose_override_flags(argv[1:], default_config)
            if problem is None:
                raise
            sys.stderr.write(f"FATAL Flags parsing error: {problem}\n")
            sys.exit(1)

    def main(argv):
        del argv
        setup_logging()
        from almost_jax.checkpoints.source import follow_params_from_command_line
        follow_params_from_command_line(config.value, config_flags.get_override_values(flags.FLAGS[config.name]))
        reset_skipped()
        maybe_initialize_distributed(config.value)
        try:
            job_fn(config.value, **{k: f.value for k, f in extras.items()})
        except USER_ERRORS as e:
            logging.getLogger("almost_jax").error("%s: %s", type(e).__name__, e)
            sys.exit(1)

    app.run(main, flags_parser=parse_flags)
