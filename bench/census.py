"""What the compiled train step writes to memory, by op kind: a static census, no timing.

    .venv/bin/python bench/census.py                       # bench-10m SFT 8x256, fp32, 1 CPU device
    .venv/bin/python bench/census.py --preset=bench-134m --batch=4 --seq=512 --scan-layers

Compiles the project's train step (`bench/compile.py`'s lowering: LM loss, AdamW, shardings) for
abstract arguments and sums the output bytes of the program's top-level ops (fusions, dots,
copies; not the ops inside a fusion, which stay in registers/cache), grouped by kind. On a CPU,
where the step is bound by memory traffic as much as by matmuls, it shows layout shuffles
(copy/transpose fusions) and [B, T, vocab]-sized work without the noise of a shared machine.
With scanned layers the loop body is counted once, not once per layer.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

BYTES = {"f64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s8": 1, "u8": 1, "pred": 1}
NOT_WRITES = ("parameter", "bitcast", "get-tuple-element", "tuple", "constant")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.-]+) = (\w+)\[([\d,]*)\]\{[^}]*\} ([\w-]+)\(")


def census(hlo_text: str) -> dict[str, tuple[int, int]]:
    """{op kind: (count, bytes written)} over the instructions outside fused computations; a
    fusion's kind is its name without the numeric suffix (e.g. copy_bitcast_fusion)."""
    out = collections.defaultdict(lambda: [0, 0])
    inside_fusion = False
    for line in hlo_text.splitlines():
        if line and not line.startswith(" "):  # a computation's header (fusions call *fused* / *_computation*)
            head = line.split("(")[0]
            inside_fusion = not head.startswith("ENTRY") and ("fused" in head or "computation" in head)
            continue
        m = _INSTRUCTION.match(line)
        if not m or inside_fusion:
            continue
        name, dtype, dims, op = m.groups()
        kind = re.sub(r"([._]\d+)+$", "", name) if op == "fusion" else op
        elements = 1
        for d in filter(None, dims.split(",")):
            elements *= int(d)
        out[kind][0] += 1
        out[kind][1] += elements * BYTES.get(dtype, 4)
    return {k: (c, b) for k, (c, b) in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="bench-10m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--scan-layers", action="store_true")
    p.add_argument("--remat-policy", default="none")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()

    from almost_jax.parallel import DEFAULT_RULES, MeshConfig, make_mesh, mesh_context
    from bench.compile import lower_train_step, model_config
    cfg = model_config({"preset": args.preset, "dtype": args.dtype, "remat_policy": args.remat_policy,
                        "layout": "scan" if args.scan_layers else "unrolled"})
    mesh = make_mesh(MeshConfig(1, -1, 1))
    with mesh_context(mesh, DEFAULT_RULES):
        text = lower_train_step(cfg, mesh, args.batch, args.seq).compile().as_text()
    kinds = census(text)
    rows = [{"kind": k, "ops": c, "mb": b / 2**20} for k, (c, b) in kinds.items() if k not in NOT_WRITES]
    rows.sort(key=lambda r: -r["mb"])
    total = {"kind": "total written", "ops": sum(r["ops"] for r in rows), "mb": sum(r["mb"] for r in rows)}
    common.print_table(f"train step {args.preset} SFT {args.batch}x{args.seq} {args.dtype} "
                       f"(scan_layers={args.scan_layers}, remat {args.remat_policy}): bytes written by top-level op",
                       rows[:args.top] + [total], [("kind", "op kind", "{}"), ("ops", "ops", "{}"),
                                                   ("mb", "MB written", "{:.1f}")])


if __name__ == "__main__":
    main()
