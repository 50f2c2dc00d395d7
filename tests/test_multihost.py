"""The pretrain job on a simulated 2-host pod: 2 processes x 4 fake CPU devices joined by
jax.distributed (gloo collectives), checked against the same job as 1 process x 8 devices.

Only multi-host runs exercise these paths: per-host batch slices assembled into one global
batch, checkpoints written by several processes, and a preemption that every host must agree on.
"""
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from almost_jax.data.lm_data import RowBatches
from tests.multidevice import REPO, run_with_devices
from tests.test_train_resume import _cmd, _env, _params, corpus  # noqa: F401  (corpus: the fixture)

# The loop can dispatch up to log_every (10) steps ahead of the devices and jax notices SIGTERM within
# 1 s, so a preemption signalled after step 10 lands by step ~25 at most: 40 keeps it mid-run.
STEPS = 40
MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.mesh.tensor=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _devices_env(n_devices, cache):
    """The job's env with n fake CPU devices; a shared compilation cache spares each run most of
    its compile time."""
    return {**_env(), "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
            "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@contextlib.contextmanager
def _pod(cmd, env, logdir, via_env=False):
    """Start `cmd` as processes 0 and 1 of a 2-host pod (peers given as job config flags, or as
    JAX_* env vars); yield the Popens; SIGKILL whatever still runs on the way out."""
    port = _free_port()
    procs, logs = [], []
    logdir.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(2):
            if via_env:
                argv, penv = cmd, {**env, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": str(i)}
            else:
                argv, penv = cmd + ["--config.distributed.enabled=True",
                                    f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                                    "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"], env
            logs.append(open(logdir / f"host{i}.log", "w"))  # a file, not a pipe: a full pipe stalls the job
            procs.append(subprocess.Popen(argv, env=penv, cwd=REPO, stdout=logs[-1], stderr=subprocess.STDOUT))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for f in logs:
            f.close()


def _wait(procs, logdir, timeout=240):
    """Exit codes of all processes, and their logs; a pod still running after `timeout` (e.g. one
    host stuck in a collective the others left) is killed and reported."""
    deadline = time.time() + timeout
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.time())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        codes = None
    logs = [(logdir / f"host{i}.log").read_text() for i in range(len(procs))]
    assert codes is not None, f"pod still running after {timeout}s:\n" + _tails(logs)
    return codes, logs


def _tails(logs):
    return "\n".join(f"--- host {i}:\n{log[-3000:]}" for i, log in enumerate(logs))


def _saved_steps(workdir):
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.glob("*") if p.name.isdigit()) if ckpt.exists() else []


def _wait_for_checkpoint(workdir, procs, logdir, step, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if step in _saved_steps(workdir):
            return
        if any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            raise AssertionError("a host ended before the signal:\n" + _tails(_wait(procs, logdir)[1]))
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint {step} appeared")


def _assert_params_close(got, want, atol):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):  # noqa: F811
    """The same job as 1 process x 8 devices and as a 2-host pod (same mesh, same steps)."""
    d = tmp_path_factory.mktemp("multihost")
    cache = d / "jax_cache"
    single = subprocess.run(_cmd(corpus, d / "single", STEPS, MESH), env=_devices_env(8, cache), cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    with _pod(_cmd(corpus, d / "pod", STEPS, MESH), _devices_env(4, cache), d / "pod_logs") as procs:
        codes, logs = _wait(procs, d / "pod_logs")
    assert codes == [0, 0], _tails(logs)
    return {"dir": d, "cache": cache, "single": d / "single", "pod": d / "pod", "pod_logs": logs}


def test_pod_job_matches_single_process(runs):
    """Per-host slices make the same global batches: same params as one process on the same mesh."""
    assert all("process %d of 2, 4 local / 8 global devices" % i in log for i, log in enumerate(runs["pod_logs"]))
    _assert_params_close(_params(runs["pod"]), _params(runs["single"]), atol=1e-5)
    # metrics come from process 0 alone: one row per logged step, not one per host
    rows = [json.loads(line) for line in (runs["pod"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10, STEPS + 1, 10))
    single_rows = [json.loads(line) for line in (runs["single"] / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["train/loss"] for r in rows], [r["train/loss"] for r in single_rows], rtol=1e-5)
    assert json.loads((runs["pod"] / "manifest.json").read_text())["rows"] > 0


@pytest.mark.parametrize("hosts", [2, 4])
def test_row_batches_host_slices_partition_the_global_batch(hosts):
    rows = {"input_ids": np.arange(50 * 3, dtype=np.int32).reshape(50, 3), "loss_mask": np.ones((50, 3), np.int32)}
    whole = RowBatches(rows, 8, seed=1, process_index=0, process_count=1)
    per_host = [RowBatches(rows, 8, seed=1, process_index=i, process_count=hosts) for i in range(hosts)]
    for step in (0, 5, 6, 13):  # 6 steps per epoch: crosses two epoch boundaries
        slices = [b(step)["input_ids"] for b in per_host]
        assert all(s.shape == (8 // hosts, 3) for s in slices)
        firsts = [int(r[0]) for s in slices for r in s]
        assert len(set(firsts)) == 8  # disjoint
        np.testing.assert_array_equal(np.concatenate(slices), whole(step)["input_ids"])  # host-major order


HOST_SLICE_SCRIPT = """
import jax, numpy as np
from jax.experimental import multihost_utils
from almost_jax.data.lm_data import RowBatches
from almost_jax.parallel import MeshConfig, make_mesh, maybe_initialize_distributed, shard_batch

maybe_initialize_distributed()  # peers from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
me = jax.process_index()
assert (jax.process_count(), jax.local_device_count(), jax.device_count()) == (2, 4, 8)
rows = {"input_ids": np.arange(50 * 3, dtype=np.int32).reshape(50, 3)}
mine_reader = RowBatches(rows, 8, seed=1)  # process index and count from jax, as in fit()
whole_reader = RowBatches(rows, 8, seed=1, process_index=0, process_count=1)
mesh = make_mesh(MeshConfig(data=2, fsdp=4))
for step in (0, 5, 6, 13):
    whole, mine = whole_reader(step)["input_ids"], mine_reader(step)["input_ids"]
    np.testing.assert_array_equal(mine, whole[4 * me:4 * me + 4])  # this host read its 4 rows only
    arr = shard_batch({"input_ids": mine}, mesh)["input_ids"]
    assert arr.shape == (8, 3)
    for shard in arr.addressable_shards:  # this host's devices hold global rows of its own slice
        assert 4 * me <= shard.index[0].start < 4 * me + 4, shard.index
        np.testing.assert_array_equal(np.asarray(shard.data), whole[shard.index])
    np.testing.assert_array_equal(multihost_utils.process_allgather(arr, tiled=True), whole)
print("HOST_SLICE_OK", me)
"""


def test_pod_hosts_read_only_their_slice(runs):
    """In a real 2-process pod: RowBatches reads this host's rows, shard_batch puts them on this
    host's devices at their global positions, and the global batch is the 1-host batch."""
    logdir = runs["dir"] / "slice_logs"
    with _pod([sys.executable, "-c", textwrap.dedent(HOST_SLICE_SCRIPT)], _devices_env(4, runs["cache"]), logdir,
              via_env=True) as procs:
        codes, logs = _wait(procs, logdir, timeout=120)
    assert codes == [0, 0], _tails(logs)
    assert all(f"HOST_SLICE_OK {i}" in log for i, log in enumerate(logs))


RESTORE_SCRIPT = """
import runpy
import jax, numpy as np
from almost_jax.checkpoints.orbax_io import Checkpointer, load_params
from almost_jax.config_lib import llama_config
from almost_jax.models.llama import abstract_or_init
from almost_jax.parallel import MeshConfig, make_mesh
from almost_jax.train.optim import make_optimizer
from almost_jax.parallel.shard import with_shardings
from almost_jax.train.state import abstract_state, state_shardings

cfg = runpy.run_path("configs/mini/pretrain.py")["get_config"]()  # the job's config, as the pod ran it
cfg.model.preset = "tiny"
model_cfg = llama_config(cfg.model)
tx, _ = make_optimizer(cfg.optimizer, {steps})
boxed = abstract_or_init(model_cfg, jax.random.key(0), "lm")
mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=1))
target = with_shardings(abstract_state(boxed, tx), state_shardings(boxed, tx, mesh))
state, meta = Checkpointer("{pod}/checkpoints").restore(target)
assert int(state.step) == {steps} and meta["data_step"] == {steps}, (int(state.step), meta)
leaves = jax.tree.leaves(state.params)
assert all(x.sharding.mesh.shape == mesh.shape for x in leaves)
assert any(x.sharding.spec != jax.sharding.PartitionSpec() for x in leaves)  # really sharded here
final = load_params("{pod}/params")  # the pod's final params, read onto this host's one device
for a, b in zip(jax.tree.leaves(final), leaves):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
print("RESTORE_OK", len(leaves))
"""


def test_pod_checkpoint_restores_in_one_process_on_another_mesh(runs):
    """The pod's train checkpoint (8 devices, 2 processes) restores in 1 process on 2 devices."""
    out = run_with_devices(2, RESTORE_SCRIPT.format(steps=STEPS, pod=runs["pod"]))
    assert "RESTORE_OK" in out


def _preempt(corpus, workdir, cache, signal_hosts):  # noqa: F811
    """Run the pod, SIGTERM `signal_hosts` once step 10 is saved; return the step both hosts saved."""
    logdir = workdir.parent / (workdir.name + "_logs")
    with _pod(_cmd(corpus, workdir, STEPS, MESH), _devices_env(4, cache), logdir) as procs:
        _wait_for_checkpoint(workdir, procs, logdir, 10)
        for i in signal_hosts:
            procs[i].send_signal(signal.SIGTERM)
        codes, logs = _wait(procs, logdir, timeout=120)
    stops = [re.search(r"Preempted: stopped at step (\d+)", log) for log in logs]
    assert all(stops) and all(c == 1 for c in codes), (codes, _tails(logs))
    stopped = {int(m.group(1)) for m in stops}
    assert len(stopped) == 1, stopped  # every host stopped at the same step
    step = stopped.pop()
    assert 10 < step < STEPS and step in _saved_steps(workdir), (step, _saved_steps(workdir))
    assert not (workdir / "params").exists()
    return step


@pytest.mark.slow  # 70 s; the one-host case below stays in the default run
def test_pod_sigterm_to_both_hosts_saves_one_step_and_resumes(runs, corpus, tmp_path):  # noqa: F811
    run = tmp_path / "term_both"
    step = _preempt(corpus, run, runs["cache"], signal_hosts=(0, 1))
    logdir = tmp_path / "resume_logs"
    with _pod(_cmd(corpus, run, STEPS, MESH), _devices_env(4, runs["cache"]), logdir) as procs:
        codes, logs = _wait(procs, logdir)
    assert codes == [0, 0], _tails(logs)
    assert all(f"resumed from step {step}" in log for log in logs), _tails(logs)
    _assert_params_close(_params(run), _params(runs["pod"]), atol=1e-6)


def test_pod_sigterm_to_one_host_stops_every_host_at_one_step(runs, corpus, tmp_path):  # noqa: F811
    """The preemption notice reaches host 1 only; jax's preemption sync stops host 0 at the same step."""
    _preempt(corpus, tmp_path / "term_one", runs["cache"], signal_hosts=(1,))
