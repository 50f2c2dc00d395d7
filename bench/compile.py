"""Ahead-of-time compile time of the train step and the decode step: unrolled vs scanned layers.

    .venv/bin/python bench/compile.py        # llama2-7b and llama2-70b, and the 7b width at 8/16/32/80 layers
    .venv/bin/python bench/compile.py --presets=llama2-7b --depths= --steps=train --layouts=scan

Each measurement lowers and compiles the project's real jitted step - `train.step.make_train_step`
with the LM loss, AdamW and the state's logical shardings; the sampler's `make_generate_fn`
(prefill + while-loop decode) - for abstract arguments (ShapeDtypeStructs carrying their
shardings: no weights are made) on a fake CPU mesh of `--devices` devices, in a fresh worker
process (no warm caches). `lower` is tracing + StableHLO, `compile` is XLA; with scanned layers
both should stay flat as the depth grows.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def model_config(spec: dict):
    from almost_jax.models.config import get_config
    cfg = get_config(spec["preset"], dtype=spec["dtype"], remat_policy=spec["remat_policy"],
                     scan_layers=spec["layout"] == "scan")
    return cfg.replace(num_layers=spec["layers"]) if spec.get("layers") else cfg


def lower_train_step(cfg, mesh, batch: int, seq: int):
    import jax
    import jax.numpy as jnp
    from almost_jax.config_lib import optimizer_block
    from almost_jax.learners.lm import make_lm_loss
    from almost_jax.models.llama import CausalLM, abstract_or_init
    from almost_jax.parallel import batch_sharding
    from almost_jax.parallel.shard import with_shardings
    from almost_jax.train.optim import make_optimizer
    from almost_jax.train.state import abstract_state, state_shardings
    from almost_jax.train.step import make_train_step

    tx, schedule = make_optimizer(optimizer_block(), 1000)
    boxed = abstract_or_init(cfg, jax.random.key(0))
    shardings = state_shardings(boxed, tx, mesh)
    state = with_shardings(abstract_state(boxed, tx), shardings)
    batch_sh = {k: batch_sharding(mesh, 2) for k in ("input_ids", "attention_mask", "loss_mask")}
    rows = {k: jax.ShapeDtypeStruct((batch, seq), jnp.int32, sharding=s) for k, s in batch_sh.items()}
    step = make_train_step(make_lm_loss(CausalLM(cfg)), shardings, batch_sh, schedule)
    return step.lower(state, rows)


def lower_decode_step(cfg, mesh, batch: int, prompt_len: int, new_tokens: int):
    import jax
    import jax.numpy as jnp
    from almost_jax.models.llama import CausalLM, abstract_or_init, param_shardings
    from almost_jax.parallel import DEFAULT_RULES, batch_sharding
    from almost_jax.parallel.shard import with_shardings
    from almost_jax.sampling import SamplingConfig, make_generate_fn

    param_sh = param_shardings(cfg, mesh, DEFAULT_RULES)
    params = with_shardings(abstract_or_init(cfg, jax.random.key(0)), param_sh)
    batch_sh = batch_sharding(mesh)
    prompt = jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32, sharding=batch_sh)
    key = jax.eval_shape(lambda: jax.random.key(0))
    fn = make_generate_fn(CausalLM(cfg), SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=new_tokens),
                          cfg.eos_token_id, cfg.pad_token_id, param_shardings=param_sh, batch_sharding=batch_sh)
    return fn.lower(params, prompt, prompt, key)


def compile_worker(spec: dict) -> dict:
    import jax
    from almost_jax.parallel import DEFAULT_RULES, MeshConfig, make_mesh, mesh_context

    cfg = model_config(spec)
    mesh = make_mesh(MeshConfig(*spec["mesh"]))
    with mesh_context(mesh, DEFAULT_RULES):
        t0 = time.perf_counter()
        if spec["step"] == "train":
            lowered = lower_train_step(cfg, mesh, spec["batch"], spec["seq"])
        else:
            lowered = lower_decode_step(cfg, mesh, spec["batch"], spec["prompt_len"], spec["new_tokens"])
        t1 = time.perf_counter()
        if not spec.get("lower_only"):
            lowered.compile()
        t2 = time.perf_counter()
    out = {"lower_s": t1 - t0, "devices": jax.device_count(), "params": cfg.num_params(),
           "stablehlo_lines": lowered.as_text().count("\n")}
    if not spec.get("lower_only"):
        out["compile_s"] = t2 - t1
    return out


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default="llama2-7b,llama2-70b", help="presets measured at their own depth")
    p.add_argument("--depths", default="8,16,32,80", help="more depths of --depth-preset's width")
    p.add_argument("--depth-preset", default="llama2-7b")
    p.add_argument("--steps", default="train,decode")
    p.add_argument("--layouts", default="unrolled,scan")
    p.add_argument("--devices", type=int, default=8, help="fake CPU devices")
    p.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor")
    p.add_argument("--remat-policy", default="full", help="the train step's remat policy (the pod configs' default)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048, help="train sequence length")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--timeout", type=int, default=3600, help="seconds per measurement")
    p.add_argument("--lower-only", action="store_true",
                   help="trace and lower only (program size in StableHLO lines), no XLA compile")
    args = p.parse_args()
    if common.serve_worker(args, {"compile": compile_worker}):
        return

    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}").strip()
    dtype = args.dtype or "bfloat16"
    models = [(name, 0) for name in args.presets.split(",") if name]
    models += [(args.depth_preset, int(d)) for d in args.depths.split(",") if d]
    rows = []
    for preset, layers in models:
        for step in args.steps.split(","):
            for layout in args.layouts.split(","):
                spec = {"preset": preset, "layers": layers, "layout": layout, "step": step, "dtype": dtype,
                        "remat_policy": args.remat_policy, "mesh": [int(x) for x in args.mesh.split(",")],
                        "batch": args.batch, "seq": args.seq, "prompt_len": args.prompt_len,
                        "new_tokens": args.new_tokens, "lower_only": args.lower_only}
                try:
                    res = common.run_worker(__file__, "compile", spec, "cpu", timeout=args.timeout)
                except Exception as e:  # a timeout: report it, measure the rest
                    res = {"error": f"{type(e).__name__}: {e}"}
                row = {"model": f"{preset}" + (f" @{layers} layers" if layers else ""), "step": step,
                       "layout": layout}
                if "error" in res:
                    print(f"{row['model']} {step} {layout} failed: {res['error'][-800:]}", file=sys.stderr)
                else:
                    row.update(lower_s=res["lower_s"], compile_s=res.get("compile_s"), params=res["params"] / 1e9,
                               stablehlo_lines=res["stablehlo_lines"], host_gb=res.get("peak_host_gb"))
                rows.append(row)
                print(f"{row['model']} {step} {layout}: " + (f"lower {row['lower_s']:.1f}s compile "
                      f"{row['compile_s'] or 0:.1f}s" if "lower_s" in row else "failed"), file=sys.stderr, flush=True)
    common.print_table(f"ahead-of-time compile on {args.devices} fake CPU devices, mesh (data,fsdp,tensor)="
                       f"({args.mesh}), {dtype}; train: batch {args.batch}x{args.seq}, remat {args.remat_policy}; "
                       f"decode: batch {args.batch}, prompt {args.prompt_len} + {args.new_tokens} new", rows, [
                           ("model", "model", "{}"), ("params", "params (B)", "{:.2f}"), ("step", "step", "{}"),
                           ("layout", "layers", "{}"), ("lower_s", "lower s", "{:.1f}"),
                           ("compile_s", "compile s", "{:.1f}"), ("stablehlo_lines", "StableHLO lines", "{}"),
                           ("host_gb", "host GB", "{:.2f}")])
    common.write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
