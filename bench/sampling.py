"""Sampling throughput: almost_jax's jitted KV-cache decoder beside transformers `generate`.

    .venv/bin/python bench/sampling.py                        # CPU: bench-134m, batch 1/8/32/128
    .venv/bin/python bench/sampling.py --device=gpu --preset=tinyllama-1.1b --prompt-len=128 --new-tokens=256
    .venv/bin/python bench/sampling.py --top-p=0.9                # sampled (T=1, nucleus 0.9) in both

Both frameworks load the same Hugging Face checkpoint (random weights written once), decode
greedily (or, with `--top-p`, sampled) for exactly `--new-tokens` tokens (EOS disabled), and are timed end to end (prefill +
decode, best of `--repeats` after a warm-up call that compiles). Beside each figure: the
roofline bound of this device (weights + KV cache streamed once per step at the measured or
datasheet bandwidth, or the matmul peak, whichever is lower) and the fraction of it reached.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from almost_jax.models.config import ATTENTION_IMPLS  # noqa: E402  (no jax import)
from bench import common  # noqa: E402


def jax_worker(spec: dict) -> dict:
    import jax
    import numpy as np
    from almost_jax.checkpoints.hf import load_hf_checkpoint, load_hf_config
    from almost_jax.models.llama import CausalLM
    from almost_jax.sampling import SamplingConfig, make_generate_fn
    cfg = load_hf_config(spec["ckpt"]).replace(dtype=spec["dtype"], param_dtype=spec["dtype"],
                                                attention_impl=spec.get("attention_impl", "xla"))
    _, params = load_hf_checkpoint(spec["ckpt"], cfg, dtype=spec["dtype"])
    params = jax.device_put(params)
    model = CausalLM(cfg)
    top_p = spec.get("top_p", 0.0)
    sampling = (SamplingConfig(temperature=1.0, top_p=top_p, max_new_tokens=spec["new_tokens"]) if top_p else
                SamplingConfig(temperature=0.0, max_new_tokens=spec["new_tokens"]))
    fn = make_generate_fn(model, sampling, eos_id=-1, pad_id=0)
    rows = {}
    for batch in spec["batches"]:
        ids = np.random.RandomState(batch).randint(3, cfg.vocab_size, (batch, spec["prompt_len"])).astype(np.int32)
        mask = np.ones_like(ids)
        call = lambda: fn(params, ids, mask, jax.random.key(0))["tokens"].block_until_ready()  # noqa: E731
        call()  # compile
        seconds = common.best_of(call, spec["repeats"])
        rows[str(batch)] = {"tok_s": batch * spec["new_tokens"] / seconds, "seconds": seconds}
    return {"rows": rows, "limits": common.device_limits(spec["dtype"], spec["peak_tflops"])}


def hf_worker(spec: dict) -> dict:
    import numpy as np
    import torch
    import transformers
    common.set_torch_threads()
    dev = "cuda" if spec["device"] == "gpu" else "cpu"
    model = transformers.LlamaForCausalLM.from_pretrained(spec["ckpt"], dtype=getattr(torch, spec["dtype"]))
    model = model.to(dev).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    rows = {}
    for batch in spec["batches"]:
        ids = np.random.RandomState(batch).randint(3, model.config.vocab_size, (batch, spec["prompt_len"]))
        ids = torch.tensor(ids, device=dev)
        mask = torch.ones_like(ids)

        def call():
            with torch.inference_mode():
                sample = dict(do_sample=True, temperature=1.0, top_p=spec["top_p"], top_k=0) if spec.get("top_p") \
                    else dict(do_sample=False)
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=spec["new_tokens"],
                                     min_new_tokens=spec["new_tokens"], **sample)
            if dev == "cuda":
                torch.cuda.synchronize()
            assert out.shape[1] == spec["prompt_len"] + spec["new_tokens"], out.shape

        call()  # warm-up (allocator, kernels)
        seconds = common.best_of(call, spec["repeats"])
        rows[str(batch)] = {"tok_s": batch * spec["new_tokens"] / seconds, "seconds": seconds}
    return {"rows": rows}


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="", help="model preset (default: bench-134m on cpu, tinyllama-1.1b elsewhere)")
    p.add_argument("--batches", default="1,8,32,128")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--attention-impl", default="xla", choices=ATTENTION_IMPLS)
    p.add_argument("--top-p", type=float, default=0.0,
                   help="0: greedy; else sample at temperature 1 with this nucleus (both frameworks)")
    args = p.parse_args()
    if common.serve_worker(args, {"jax": jax_worker, "hf": hf_worker}):
        return

    preset = args.preset or ("bench-134m" if args.device == "cpu" else "tinyllama-1.1b")
    dtype = common.compute_dtype(args)
    spec = {"ckpt": common.shared_checkpoint(__file__, preset, args), "dtype": dtype, "batches": [int(b) for b in args.batches.split(",")],
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats,
            "device": args.device, "peak_tflops": args.peak_tflops, "attention_impl": args.attention_impl,
            "top_p": args.top_p}
    jx = common.run_worker(__file__, "jax", spec, args.device)
    hf = {} if args.no_hf or args.device == "tpu" else common.run_worker(__file__, "hf", spec, args.device)
    for name, res in (("almost_jax", jx), ("transformers", hf)):
        if "error" in res:
            print(f"{name} failed: {res['error']}", file=sys.stderr)

    from almost_jax.models.config import get_config
    cfg = get_config(preset)
    limits = jx.get("limits", {})
    bytes_per = 2 if dtype == "bfloat16" else 4
    context = args.prompt_len + args.new_tokens / 2
    rows = []
    for b in spec["batches"]:
        r = {"batch": b, "jax": jx.get("rows", {}).get(str(b), {}).get("tok_s"),
             "hf": hf.get("rows", {}).get(str(b), {}).get("tok_s")}
        if limits:
            mem = b * limits["bandwidth"] / common.decode_bytes_per_step(cfg, b, context, bytes_per)
            comp = limits["peak_flops"] / common.decode_flops_per_token(cfg, context)
            r["bound"], r["bound_kind"] = min(mem, comp), "memory" if mem < comp else "compute"
            r["frac"] = r["jax"] / r["bound"] if r["jax"] else None
        r["ratio"] = r["jax"] / r["hf"] if r["jax"] and r["hf"] else None
        rows.append(r)
    print(f"\nmodel {preset} ({cfg.num_params() / 1e6:.0f}M params), {dtype}, prompt {args.prompt_len} + "
          f"{args.new_tokens} new tokens, {f'sampled (T=1, top-p {args.top_p})' if args.top_p else 'greedy'}; device {limits.get('device_kind', args.device)}")
    if limits:
        print(f"peak {limits['peak_flops'] / 1e9:.0f} GFLOP/s ({limits['peak_source']}), "
              f"bandwidth {limits['bandwidth'] / 1e9:.1f} GB/s")
    common.print_table("sampling tokens/s", rows, [
        ("batch", "batch", "{}"), ("jax", "almost_jax", "{:.0f}"), ("hf", "transformers", "{:.0f}"),
        ("ratio", "ratio", "{:.2f}x"), ("bound", "bound", "{:.0f}"), ("bound_kind", "bound by", "{}"),
        ("frac", "of bound", "{:.0%}")])
    print(f"peak memory: almost_jax host {jx.get('peak_host_gb', float('nan')):.2f} GB"
          + (f", device {jx['peak_device_gb']:.2f} GB" if "peak_device_gb" in jx else "")
          + (f"; transformers host {hf['peak_host_gb']:.2f} GB" if "peak_host_gb" in hf else "")
          + (f", device {hf['peak_device_gb']:.2f} GB" if "peak_device_gb" in hf else ""))
    common.write_json(args.json, {"preset": preset, "dtype": dtype, "limits": limits, "rows": rows})



if __name__ == "__main__":
    main()
