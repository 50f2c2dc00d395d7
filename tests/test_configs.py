"""Every config file builds, every one of its fields can be overridden from the command line, and a
typo'd key says which fields exist."""
import subprocess
import sys
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from almost_jax.config_lib import load_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py"))


def _leaves(cfg: ConfigDict, prefix: str = ""):
    for key, value in cfg.items():
        if isinstance(value, ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def _other_value(value):
    """A value of the same type that differs from `value` (what a user would set)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value * 2 + 0.25
    if isinstance(value, str):
        return value + "_x" if value else "x/y.jsonl"
    if isinstance(value, tuple):
        return value[1:] if len(value) > 1 else (value + (value[0],) if value else ("x",))
    raise TypeError(f"no override rule for {type(value).__name__} {value!r}")


def _flag(value) -> str:
    return value if isinstance(value, str) else repr(value)


@pytest.mark.parametrize("path", CONFIGS)
def test_every_field_is_overridable_from_the_command_line(path):
    """Every leaf of every config, overridden at once through absl + ml_collections' config flags
    (the path `run_job` gives a user: `--config=<file> --config.key=value`), arrives with its new
    value; `config_lib.apply_overrides` (the pipeline's and the tests' path) agrees."""
    from absl import flags
    from ml_collections import config_flags

    default = load_config_file(REPO / path)
    wanted = {key: _other_value(value) for key, value in _leaves(default)}
    argv = ["job", f"--config={REPO / path}"] + [f"--config.{k}={_flag(v)}" for k, v in wanted.items()]
    fv = flags.FlagValues()  # as run_job defines it; the overrides are read from sys.argv there
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    got = dict(_leaves(fv.config))
    assert got == wanted, {k: (got.get(k), v) for k, v in wanted.items() if got.get(k) != v}
    via_lib = load_config_file(REPO / path, [a for a in argv[2:]])
    assert dict(_leaves(via_lib)) == wanted


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


def test_a_typo_in_an_override_names_the_block_and_its_fields():
    """Through a job's entry point (absl + ml_collections, then run_job's diagnosis) and through
    config_lib.apply_overrides: one line, not ml_collections' AttributeError traceback."""
    out = subprocess.run([sys.executable, "-m", "almost_jax.jobs.pretrain", "--config=configs/mini/pretrain.py",
                          "--config.train.lerning_rate=1e-4"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "--config.train.lerning_rate: no field 'lerning_rate' in train; fields are: batch_size, " in out.stderr
    with pytest.raises(KeyError, match=r"--config\.trian\.steps: no field 'trian' in the config; fields are: data, "):
        load_config_file(REPO / "configs/mini/pretrain.py", ["trian.steps=3"])
    with pytest.raises(KeyError, match=r"no field 'x' in optimizer\.lr; fields are: none \(not a block\)"):
        load_config_file(REPO / "configs/mini/pretrain.py", ["optimizer.lr.x=3"])
