"""Training never writes a diverged state, resumes only under its own config, and survives a
damaged latest checkpoint."""
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from almost_jax.checkpoints.orbax_io import Checkpointer, CheckpointError
from almost_jax.config_lib import mesh_block, model_block, optimizer_block, train_block
from almost_jax.learners.lm import make_lm_loss
from almost_jax.models.config import get_config
from almost_jax.models.llama import CausalLM, init_params
from almost_jax.train.finite import FiniteCheck, NonFiniteError, check_finite
from almost_jax.train.resume import ResumeError, changed_keys, config_meta, restored_values, training_config
from almost_jax.train.runner import fit


# ---------------------------------------------------------------- the finite check itself

def test_check_finite_names_step_and_metric():
    check_finite(3, {"loss": jnp.float32(1.0), "grad_norm": jnp.float32(2.0), "other": jnp.nan})
    with pytest.raises(NonFiniteError, match=r"non-finite grad_norm at step 7 \(grad_norm=inf\)"):
        check_finite(7, {"loss": jnp.float32(1.0), "grad_norm": jnp.float32(jnp.inf)})
    with pytest.raises(NonFiniteError, match="loss and grad_norm at step 2"):
        check_finite(2, {"loss": jnp.nan, "grad_norm": jnp.nan})


def test_lagged_check_catches_every_step_before_a_save():
    check = FiniteCheck()
    check.after_step(1, {"loss": jnp.float32(1.0)})
    check.after_step(2, {"loss": jnp.float32(jnp.nan)})  # step 2 is read only at the next call
    with pytest.raises(NonFiniteError, match="step 2"):
        check.after_step(3, {"loss": jnp.float32(1.0)})
    check = FiniteCheck()
    check.after_step(1, {"loss": jnp.float32(jnp.nan)})
    with pytest.raises(NonFiniteError, match="step 1"):  # verify (before a save) reads the pending step
        check.verify(1)
    with pytest.raises(NonFiniteError, match="params"):  # finite metrics, but an update overflowed
        FiniteCheck().verify(5, {"w": jnp.array([1.0, jnp.inf]), "step": jnp.array(3)})
    FiniteCheck().verify(5, {"w": jnp.ones(3), "i": jnp.arange(3)})


# ---------------------------------------------------------------- through fit (the job path)

ROWS = 64


@pytest.fixture(scope="module")
def lm_rows():
    rs = np.random.RandomState(0)
    ids = rs.randint(3, 256, (ROWS, 16)).astype(np.int32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "loss_mask": np.ones_like(ids),
            "positions": np.tile(np.arange(16, dtype=np.int32), (ROWS, 1))}


def job_config(workdir, steps=4, lr=1e-3, **train):
    train = {"batch_size": 8, "seq_len": 16, "log_every": 1, "checkpoint_every": 2, "progress": False, **train}
    return ConfigDict(dict(
        name="t", workdir=str(workdir), model=model_block("tiny"), mesh=mesh_block(), data=ConfigDict(dict(corpus="x")),
        optimizer=optimizer_block(lr=lr, schedule="constant", warmup_ratio=0.0),
        train=train_block(steps=steps, **train)))


def run_fit(cfg, rows):
    model_cfg = get_config("tiny")
    return fit(cfg, model_cfg, make_lm_loss(CausalLM(model_cfg)), rows, cfg.workdir,
               lambda: init_params(model_cfg, jax.random.key(0)), desc="t")


def steps_on_disk(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def test_resume_checks_the_config_and_divergence_keeps_the_last_finite_checkpoints(tmp_path, lm_rows, caplog):
    """The issue's cases on one run: a good run to step 4; rerun with another lr / fewer steps /
    unchanged; then resumed (forced) with a diverging lr to step 10: before the guard, NaN
    checkpoints 6..10 rotated out steps 2 and 4 and NaN params were written."""
    run_fit(job_config(tmp_path, steps=4), lm_rows)
    assert steps_on_disk(tmp_path) == [2, 4]
    params_mtime = (tmp_path / "params").stat().st_mtime_ns
    with pytest.raises(ResumeError, match=r"optimizer\.lr: 0\.001 -> 0\.002(.|\n)*train\.steps: 4 -> 6"):
        run_fit(job_config(tmp_path, steps=6, lr=2e-3), lm_rows)
    with pytest.raises(ResumeError, match="at or past train.steps=2"):  # even forced: nothing to train
        run_fit(job_config(tmp_path, steps=2, resume="force"), lm_rows)
    with caplog.at_level(logging.INFO):  # same config, already done: nothing trained or rewritten
        _, metrics = run_fit(job_config(tmp_path, steps=4, log_every=2, progress=True), lm_rows)
    assert "already finished" in caplog.text and np.isfinite(metrics["loss"])

    with pytest.raises(NonFiniteError, match=r"at step \d+ .*the last checkpoint, step 4"):
        run_fit(job_config(tmp_path, steps=10, lr=1e30, resume="force"), lm_rows)
    assert "resuming under a changed config" in caplog.text
    assert steps_on_disk(tmp_path) == [2, 4]
    assert (tmp_path / "params").stat().st_mtime_ns == params_mtime


def test_training_config_ignores_layout_and_logging_only():
    a = job_config("/a")
    b = job_config("/b", log_every=5, checkpoint_every=7, resume="force")
    b.mesh.fsdp = 2
    assert config_meta(a) == config_meta(b)
    b.train.seed = 1
    b.model.dtype = "bfloat16"
    assert set(changed_keys(config_meta(a)["training_config"], training_config(b))) == {"train.seed", "model.dtype"}


def test_restored_value_never_overrides_a_changed_config_value():
    cfg = ConfigDict(dict(ppo=ConfigDict(dict(kl_coef=0.05))))
    meta = {**config_meta(cfg), "kl_coef": 0.031}  # adapted during the run
    assert restored_values(meta, cfg, {"kl_coef": "ppo.kl_coef"}) == {"kl_coef": 0.031}
    cfg.ppo.kl_coef = 0.2  # the user sets it on the command line when resuming
    assert restored_values(meta, cfg, {"kl_coef": "ppo.kl_coef"}) == {"kl_coef": 0.2}


# ---------------------------------------------------------------- damaged checkpoints

def _save_steps(directory, steps):
    ck = Checkpointer(directory, max_to_keep=5)
    for s in steps:
        w = jax.random.normal(jax.random.key(s), (64, 64)).at[0, 0].set(float(s))  # incompressible
        ck.save(s, {"w": w}, meta={"step": s})
    ck.wait()
    return ck


def _damage(step_dir, how):
    for data in (p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"):
        if how == "delete":
            data.unlink()
        else:
            data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_restore_falls_back_to_the_previous_step(tmp_path, caplog, how):
    ck = _save_steps(tmp_path / "ck", [1, 2, 3])
    _damage(tmp_path / "ck" / "3", how)
    target = {"w": jax.ShapeDtypeStruct((64, 64), jnp.float32)}
    with caplog.at_level(logging.WARNING):
        state, meta = ck.restore(target)
    assert meta == {"step": 2} and float(state["w"][0, 0]) == 2.0
    warning = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warning) == 1 and str(tmp_path / "ck" / "3") in warning[0] and len(warning[0]) < 600
    assert ck.latest_step() == 2 and (tmp_path / "ck" / "3.unreadable").is_dir()
    ck.save(3, {"w": jnp.zeros((64, 64))})  # the step can be written again
    ck.wait()
    assert ck.latest_step() == 3


def test_restore_with_no_readable_step_names_each(tmp_path):
    ck = _save_steps(tmp_path / "ck", [1, 2])
    for s in (1, 2):
        _damage(tmp_path / "ck" / str(s), "delete")
    with pytest.raises(CheckpointError, match="step 2: .*step 1: "):
        ck.restore({"w": jax.ShapeDtypeStruct((64, 64), jnp.float32)})
    assert (tmp_path / "ck" / "2").is_dir()  # nothing moved when nothing could be restored


def test_a_refused_config_does_not_fall_back(tmp_path):
    ck = _save_steps(tmp_path / "ck", [1, 2])

    def refuse(meta):
        raise ResumeError(f"refused step {meta['step']}")
    with pytest.raises(ResumeError, match="refused step 2"):
        ck.restore({"w": jax.ShapeDtypeStruct((64, 64), jnp.float32)}, accept_meta=refuse)
    assert ck.latest_step() == 2
