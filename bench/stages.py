"""Wall time of each stage of a pipeline run, from the manifests it left behind.

    .venv/bin/python bench/stages.py                                  # work_dir/mini
    .venv/bin/python bench/stages.py --workdir=work_dir/mini --baseline=/path/to/older/work_dir/mini

Every stage writes `<workdir>/<stage>/manifest.json` with the `seconds` it took and the code
version that ran it; this prints them in pipeline order with their share of the total, and with
`--baseline` (another run's workdir) the ratio per stage, so a slower stage shows. Skipped
stages (done by an earlier run) keep the time of the run that did them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def stage_names() -> list[str]:
    from almost_jax.pipeline.stages import STAGES
    return [s.name for s in STAGES]


def stage_times(workdir: str | Path) -> dict[str, dict]:
    """stage -> its manifest's seconds, code version and finish time (stages without one absent)."""
    out = {}
    for name in stage_names():
        path = Path(workdir) / name / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if "seconds" in manifest:
            out[name] = {"seconds": float(manifest["seconds"]), "code": manifest.get("code_version", "?"),
                         "finished": manifest.get("finished_at")}
    return out


def stage_rows(times: dict[str, dict], baseline: dict[str, dict] | None = None) -> list[dict]:
    total = sum(t["seconds"] for t in times.values()) or 1.0
    rows = []
    for name, t in times.items():
        row = {"stage": name, "seconds": t["seconds"], "share": t["seconds"] / total, "code": t["code"],
               "finished": time.strftime("%Y-%m-%d %H:%M", time.localtime(t["finished"])) if t["finished"] else None}
        if baseline and name in baseline:
            row["baseline_s"] = baseline[name]["seconds"]
            row["ratio"] = t["seconds"] / baseline[name]["seconds"] if baseline[name]["seconds"] else None
        rows.append(row)
    rows.append({"stage": "total", "seconds": sum(t["seconds"] for t in times.values()), "share": 1.0})
    if baseline:
        common_stages = [n for n in times if n in baseline]
        base_total = sum(baseline[n]["seconds"] for n in common_stages)
        rows[-1]["baseline_s"] = base_total
        rows[-1]["ratio"] = sum(times[n]["seconds"] for n in common_stages) / base_total if base_total else None
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(common.REPO / "work_dir" / "mini"))
    p.add_argument("--baseline", default="", help="another run's workdir to compare each stage with")
    p.add_argument("--json", default="")
    args = p.parse_args()
    times = stage_times(args.workdir)
    if not times:
        sys.exit(f"no stage manifests under {args.workdir} (run the pipeline first: "
                 f"python -m almost_jax.pipeline --config=configs/mini.py)")
    rows = stage_rows(times, stage_times(args.baseline) if args.baseline else None)
    columns = [("stage", "stage", "{}"), ("seconds", "seconds", "{:.0f}"), ("share", "share", "{:.0%}")]
    if args.baseline:
        columns += [("baseline_s", "baseline s", "{:.0f}"), ("ratio", "this / baseline", "{:.2f}x")]
    columns += [("code", "code version", "{}"), ("finished", "finished", "{}")]
    common.print_table(f"pipeline stage times from the manifests in {args.workdir}", rows, columns)
    common.write_json(args.json, {"workdir": args.workdir, "rows": rows})


if __name__ == "__main__":
    main()
