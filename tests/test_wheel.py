"""The package as users install it: a wheel (not `-e`) holds every module and the prompt files, and
a job starts from it. The heavy dependencies come from the test venv through a .pth line, but
`almost_jax` itself must be imported from the fresh venv, never from this source tree."""
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import almost_jax
mods = [m.name for m in pkgutil.walk_packages(almost_jax.__path__, "almost_jax.") if not m.name.endswith("__main__")]
for m in mods:
    importlib.import_module(m)
from almost_jax.data.templates import PROMPTS_DIR, load_prompt_file, prompt_path
import os
print(json.dumps({"file": almost_jax.__file__, "modules": mods, "prompts": sorted(os.listdir(PROMPTS_DIR)),
                  "brief_dialogues": len(load_prompt_file(prompt_path("assistant_brief.txt")).dialogues)}))
"""


def run(cmd, ok=(0,), **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode in ok, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def test_wheel_installs_and_runs(tmp_path):
    import json
    src = tmp_path / "src"  # build from a copy: an in-tree build would write build/ into the checkout
    shutil.copytree(REPO / "almost_jax", src / "almost_jax", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / f, src / f)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(src)])
    (wheel,) = (tmp_path / "dist").glob("almost_jax-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)])
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # jax, flax, ... from this venv

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}  # no PYTHONPATH
    out = json.loads(run([str(py), "-c", IMPORT_ALL], cwd=work, env=env).stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(venv)), out["file"]
    expected = {str(p.relative_to(REPO))[:-3].replace("/", ".").replace(".__init__", "")
                for p in (REPO / "almost_jax").rglob("*.py") if p.name != "__main__.py"} - {"almost_jax"}
    assert expected <= set(out["modules"]), sorted(expected - set(out["modules"]))
    assert set(out["prompts"]) == {p.name for p in (REPO / "almost_jax/data/prompts").iterdir()}
    assert out["brief_dialogues"] >= 1

    helped = run([str(py), "-m", "almost_jax.jobs.chat", "--helpfull"], ok=(0, 1), cwd=work, env=env)  # absl: 1
    assert "--prompt" in helped.stdout and "--config" in helped.stdout and "Traceback" not in helped.stderr
