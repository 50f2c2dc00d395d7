"""The pipeline runner: chain hashes, stage skipping, and linking a finished run's shared stages."""
import json

from ml_collections import ConfigDict

from almost_jax.pipeline import runner
from almost_jax.pipeline.stages import Stage


def _stages(calls):
    def make(name):
        def run(cfg, out):
            calls.append(name)
            (out / "out.txt").write_text(f"{name} {cfg[name].value}")
            return {"value": cfg[name].value}
        return Stage(name, (name,), run)
    return [make("a"), make("b"), make("c")]


def _cfg(workdir, a=1, b=2, c=3, reuse=""):
    return ConfigDict(dict(workdir=str(workdir), reuse_from=reuse, a=ConfigDict(dict(value=a)),
                           b=ConfigDict(dict(value=b)), c=ConfigDict(dict(value=c))))


def test_variant_run_links_the_stages_it_shares_and_runs_the_rest(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "_stages", lambda: _stages(calls))
    runner.run_pipeline(_cfg(tmp_path / "base"))
    assert calls == ["a", "b", "c"]
    calls.clear()
    # the variant differs from stage b on: a is linked, b and c run in the variant's own directory
    runner.run_pipeline(_cfg(tmp_path / "variant", b=20, reuse=str(tmp_path / "base")))
    assert calls == ["b", "c"]
    variant = tmp_path / "variant"
    assert (variant / "a").is_symlink() and not (variant / "b").is_symlink()
    assert (variant / "b" / "out.txt").read_text() == "b 20"
    assert (tmp_path / "base" / "b" / "out.txt").read_text() == "b 2"  # the base run is untouched
    # changing a later unlinks a (never clearing the base run's directory) and reruns everything
    calls.clear()
    runner.run_pipeline(_cfg(variant, a=10, b=20, reuse=str(tmp_path / "base")))
    assert calls == ["a", "b", "c"]
    assert not (variant / "a").is_symlink()
    assert (tmp_path / "base" / "a" / "out.txt").read_text() == "a 1"
    assert json.loads((tmp_path / "base" / "a" / "manifest.json").read_text())["summary"] == {"value": 1}


def test_finished_stages_are_skipped_and_a_changed_block_reruns_from_there(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "_stages", lambda: _stages(calls))
    runner.run_pipeline(_cfg(tmp_path))
    calls.clear()
    runner.run_pipeline(_cfg(tmp_path))
    assert calls == []
    runner.run_pipeline(_cfg(tmp_path, b=5))
    assert calls == ["b", "c"]
