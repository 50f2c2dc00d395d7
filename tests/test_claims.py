"""The report's claims: paired differences over seeds and tasks, and their verdicts at 95%."""
import numpy as np
import pytest

from almost_jax.evaluation.claims import CONTRADICTED, HOLDS, NOT_SHOWN, claim, paired_difference, verdict


def test_verdict_needs_the_ci_and_every_seed_on_the_claimed_side():
    assert verdict(0.01, 0.05) == HOLDS
    assert verdict(-0.01, 0.05) == NOT_SHOWN
    assert verdict(-0.05, -0.01) == CONTRADICTED
    assert verdict(0.81, 0.9, threshold=0.8) == HOLDS
    assert verdict(0.79, 0.9, threshold=0.8) == NOT_SHOWN
    # a CI above zero is not enough when one seed went the other way
    assert verdict(0.01, 0.05, per_seed=[0.04, 0.03, -0.01]) == NOT_SHOWN
    assert verdict(0.01, 0.05, per_seed=[0.04, 0.03, 0.01]) == HOLDS


def test_paired_difference_averages_seeds_per_task_and_pairs_tasks():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 1, size=400)  # shared by both policies: pairing must cancel it
    a = np.stack([difficulty + 0.1, difficulty + 0.2])  # 2 seeds
    b = difficulty[None, :]  # a baseline without seeds broadcasts
    d = paired_difference(a, b, ["x"] * 200 + ["y"] * 200)
    assert d["mean"] == pytest.approx(0.15)
    assert d["per_seed"] == pytest.approx([0.1, 0.2])
    assert d["ci"][1] - d["ci"][0] < 1e-9  # constant difference per task: no task variance left
    assert set(d["per_family"]) == {"x", "y"}
    assert d["per_family"]["x"]["mean"] == pytest.approx(0.15)


def test_paired_difference_ci_covers_task_noise():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, size=(1, 1000)), rng.uniform(0, 1, size=(1, 1000))
    d = paired_difference(a, b)
    half = 1.96 * np.std(a - b, ddof=1) / np.sqrt(1000)
    assert d["ci"] == pytest.approx([d["mean"] - half, d["mean"] + half])
    assert d["ci"][0] < 0 < d["ci"][1]


def test_paired_difference_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference(np.zeros((2, 10)), np.zeros((2, 11)))
    with pytest.raises(ValueError, match="matching seeds"):
        paired_difference(np.zeros((2, 10)), np.zeros((3, 10)))


def test_claim_row():
    c = claim("x > y", 0.02, (0.01, 0.03), per_seed=[0.02, -0.01])
    assert c["verdict"] == NOT_SHOWN and c["ci"] == [0.01, 0.03]
