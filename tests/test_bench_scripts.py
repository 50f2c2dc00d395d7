"""bench/ helpers that are plain functions: the pipeline stage-time table and the compile-time
measurement (a tiny model on 8 fake devices; slow)."""
import json
import subprocess
import sys

import pytest

from bench import stages
from tests.multidevice import REPO, run_with_devices


def _manifest(root, stage, seconds, code="abc1234"):
    (root / stage).mkdir(parents=True)
    (root / stage / "manifest.json").write_text(json.dumps({"stage": stage, "seconds": seconds, "code_version": code,
                                                            "finished_at": 1.7e9}))


def test_stage_times_in_pipeline_order_with_baseline_ratio(tmp_path):
    now, before = tmp_path / "now", tmp_path / "before"
    _manifest(now, "reward", 30.0)
    _manifest(now, "world", 10.0)
    _manifest(now, "pretrain", 60.0)
    (now / "sft").mkdir()  # a stage without a manifest (not run yet) is left out
    _manifest(before, "world", 10.0)
    _manifest(before, "pretrain", 30.0)
    rows = stages.stage_rows(stages.stage_times(now), stages.stage_times(before))
    assert [r["stage"] for r in rows] == ["world", "pretrain", "reward", "total"]
    by = {r["stage"]: r for r in rows}
    assert by["pretrain"]["share"] == pytest.approx(0.6) and by["pretrain"]["ratio"] == pytest.approx(2.0)
    assert "ratio" not in by["reward"]  # not in the baseline
    assert by["total"]["seconds"] == 100.0 and by["total"]["ratio"] == pytest.approx(70 / 40)


def test_stage_script_prints_the_table_and_names_a_missing_workdir(tmp_path):
    _manifest(tmp_path / "mini", "world", 12.5)
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "bench" / "stages.py"), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=REPO)
    out = run(f"--workdir={tmp_path / 'mini'}")
    assert out.returncode == 0 and "world" in out.stdout and "abc1234" in out.stdout, out.stderr
    missing = run(f"--workdir={tmp_path / 'nothing'}")
    assert missing.returncode != 0 and "no stage manifests under" in missing.stderr


COMPILE = """
from bench.compile import compile_worker
for layout in ("unrolled", "scan"):
    for step in ("train", "decode"):
        r = compile_worker({{"preset": "tiny", "layers": 3, "layout": layout, "step": step, "dtype": "float32",
                            "remat_policy": "full", "mesh": [1, 4, 2], "batch": 8, "seq": 16, "prompt_len": 8,
                            "new_tokens": 4}})
        assert r["devices"] == 8 and r["compile_s"] > 0 and r["lower_s"] > 0, r
        print(layout, step, "OK")
"""


@pytest.mark.slow
def test_compile_script_lowers_and_compiles_the_real_steps():
    out = run_with_devices(8, COMPILE.format(), timeout=900)
    assert out.count("OK") == 4


def test_scanned_program_size_is_flat_in_depth():
    """The traced train and decode programs grow with depth when unrolled and not when scanned
    (what keeps pod-scale compile times flat; bench/compile.py measures the times)."""
    from bench.compile import compile_worker
    lines = {}
    for layout in ("unrolled", "scan"):
        for step in ("train", "decode"):
            for layers in (2, 4):
                r = compile_worker({"preset": "tiny", "layers": layers, "layout": layout, "step": step,
                                    "dtype": "float32", "remat_policy": "full", "mesh": [1, -1, 1], "batch": 2,
                                    "seq": 16, "prompt_len": 8, "new_tokens": 4, "lower_only": True})
                assert "compile_s" not in r
                lines[layout, step, layers] = r["stablehlo_lines"]
    for step in ("train", "decode"):
        assert lines["scan", step, 4] == lines["scan", step, 2], lines
        assert lines["unrolled", step, 4] - lines["unrolled", step, 2] > 200, lines  # two more layers' code


HLO = """HloModule m

%fused_computation (p: f32[4,8]) -> f32[8,4] {
  %p = f32[4,8]{1,0} parameter(0)
  ROOT %t = f32[8,4]{1,0} transpose(%p), dimensions={1,0}
}

ENTRY %main (x: f32[4,8]) -> f32[8,4] {
  %x = f32[4,8]{1,0} parameter(0)
  %copy_bitcast_fusion.3 = f32[8,4]{1,0} fusion(%x), kind=kLoop, calls=%fused_computation
  ROOT %dot.1 = bf16[8,8]{1,0} dot(%copy_bitcast_fusion.3, %copy_bitcast_fusion.3)
}
"""


def test_census_counts_top_level_writes_only():
    from bench.census import census
    kinds = census(HLO)
    assert kinds["copy_bitcast_fusion"] == (1, 8 * 4 * 4) and kinds["dot"] == (1, 8 * 8 * 2)
    assert "transpose" not in kinds  # inside the fusion: no memory written
    assert kinds["parameter"] == (1, 4 * 8 * 4)
