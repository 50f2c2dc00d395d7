"""The mini world's query sets: explicit order, disjoint, every family's share in every set."""
from collections import Counter
from pathlib import Path

import pytest

from almost_jax.config_lib import load_config_file
from almost_jax.data.schemas import PromptRecord, load_jsonl
from almost_jax.miniworld import tasks as T
from almost_jax.miniworld.query_sets import build_query_sets, distinct_tasks, family_shares, split_pool

REPO = Path(__file__).resolve().parents[1]
SETS = [("rm", 2000), ("rmsp", 150), ("rl", 151)]


@pytest.fixture(scope="module")
def query_sets():
    return build_query_sets(SETS, T.FAMILY_NAMES, seed=3)


def test_every_set_holds_every_family_share(query_sets):
    assert list(query_sets) == [name for name, _ in SETS]
    for name, size in SETS:
        assert len(query_sets[name]) == size
        assert Counter(t.family for t in query_sets[name]) == Counter(family_shares(size, T.FAMILY_NAMES))
        assert all(T.split_of(t.instruction) == "train" for t in query_sets[name])


def test_sets_are_disjoint_and_small_families_are_shared_out(query_sets):
    owners = {}
    for name, tasks in query_sets.items():
        for t in tasks:
            assert owners.setdefault(t.instruction, name) == name, t.instruction
    capital_pool = len(distinct_tasks("capital", 10_000, seed=3))
    assert 80 < capital_pool < 120  # 30 facts x 4 templates, ~80% in the training split
    distinct = [len({t.instruction for t in query_sets[name] if t.family == "capital"}) for name, _ in SETS]
    assert distinct == split_pool(capital_pool, [family_shares(n, T.FAMILY_NAMES)["capital"] for _, n in SETS])
    assert min(distinct) >= capital_pool // 6  # the small sets are not starved by the big one
    assert sum(distinct) == capital_pool
    sort = [t.instruction for t in query_sets["rm"] if t.family == "sort"]
    assert len(set(sort)) == len(sort)  # a large family never repeats


def test_order_not_names_decides_and_build_is_deterministic(query_sets):
    assert build_query_sets(SETS, T.FAMILY_NAMES, seed=3) == query_sets
    renamed = build_query_sets([("z", 2000), ("b", 150), ("a", 151)], T.FAMILY_NAMES, seed=3)
    for new, old in (("z", "rm"), ("b", "rmsp"), ("a", "rl")):
        assert Counter(t.instruction for t in renamed[new]) == Counter(t.instruction for t in query_sets[old])


def test_a_set_missing_a_family_is_an_error():
    with pytest.raises(ValueError, match="no .* task"):
        build_query_sets([("rm", 100), ("tiny", 3)], T.FAMILY_NAMES, seed=0)
    with pytest.raises(ValueError, match="repeat"):
        build_query_sets([("rm", 100), ("rm", 10)], T.FAMILY_NAMES, seed=0)


@pytest.mark.parametrize("pool,needs,expected", [
    (1000, [10, 20], [10, 20]),        # enough for everyone: no repeats anywhere
    (96, [1800, 60, 60], [62, 17, 17]),
    (96, [1800, 5, 60], [74, 5, 17]),  # a set never gets more than it needs
    (12, [100, 100], [6, 6]),
])
def test_split_pool(pool, needs, expected):
    got = split_pool(pool, needs)
    assert got == expected and sum(got) <= pool


def test_queries_stage_writes_the_sets_in_config_order(tmp_path):
    from almost_jax.pipeline.stages import run_queries
    cfg = load_config_file(REPO / "configs" / "mini.py", [f"workdir={tmp_path}"])
    cfg.queries.sets = (("rm", 500), ("rmsp", 50), ("rl", 50))
    summary = run_queries(cfg, tmp_path / "queries")
    families = set(cfg.world.families)
    seen = set()
    for name, size in cfg.queries.sets:
        recs = load_jsonl(tmp_path / "queries" / f"{name}.jsonl", PromptRecord)
        assert len(recs) == size == summary[name]
        assert {r.meta["family"] for r in recs} == families
        assert all(r.id.startswith(f"{name}-") for r in recs)
        assert not seen & {r.prompt for r in recs}
        seen |= {r.prompt for r in recs}
