"""Every config file builds, and every one of its fields can be overridden from the command line."""
import subprocess
import sys
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from almost_jax.config_lib import load_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py"))


def _list_fields(cfg: ConfigDict, prefix: str = "") -> list[str]:
    """Fields holding a list: ml_collections' flags refuse to override those (tuples work)."""
    out = []
    for key, value in cfg.items():
        if isinstance(value, ConfigDict):
            out += _list_fields(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            out.append(prefix + key)
    return out


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_and_every_field_is_overridable(path):
    cfg = load_config_file(REPO / path)
    assert _list_fields(cfg) == [], f"{path}: list fields cannot be overridden with --config.x=...; use tuples"


@pytest.mark.parametrize("config, flag, shown", [
    ("configs/mini/reward.py", "--config.mesh.rules=((\"embed\", None),)", "(('embed', None),)"),
    ("configs/mini/eval_rm.py", "--config.files=('a.jsonl','b.json')", "('a.jsonl', 'b.json')"),
    ("configs/mini.py", "--config.methods=('best_of_n','rloo')", "('best_of_n', 'rloo')"),
])
def test_sequence_override_on_the_command_line(config, flag, shown):
    """The README's overrides of sequence fields, through absl's flag parser."""
    field = flag.split("=", 1)[0][len("--config."):]
    code = ("from absl import app\nfrom ml_collections import config_flags\n"
            "C = config_flags.DEFINE_config_file('config')\n"
            f"app.run(lambda _: print('VALUE', C.value.{field}))\n")
    out = subprocess.run([sys.executable, "-c", code, f"--config={config}", flag],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert f"VALUE {shown}" in out.stdout, out.stderr[-2000:]
