"""Train-step throughput and MFU: almost_jax's sharded jitted step beside transformers + torch.

    .venv/bin/python bench/train.py                    # CPU: bench-10m and bench-134m, SFT and RM shapes
    .venv/bin/python bench/train.py --device=gpu --configs=tinyllama-1.1b:4x2048 --shapes=sft

One step = forward + backward + AdamW update (grad-norm clip 1.0, as HF Trainer) on random
tokens. SFT shape: causal-LM loss over [B, T]. RM shape: ALMoST's reward model, pairwise loss
over B chosen + B rejected sequences (2BT tokens per step). Both frameworks start from the same
Hugging Face checkpoint, so their first-step losses agree (printed as a check). MFU counts
6N + 12*layers*d*T FLOPs per token (PaLM's convention) against the device peak: the datasheet
bf16 figure on accelerators, a measured matmul on CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from almost_jax.models.config import ATTENTION_IMPLS  # noqa: E402  (no jax import)
from bench import common  # noqa: E402


def random_batch(shape: str, batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    import numpy as np
    rs = np.random.RandomState(seed)
    ids = lambda: rs.randint(3, vocab, (batch, seq)).astype(np.int32)  # noqa: E731
    ones = np.ones((batch, seq), np.int32)
    if shape == "sft":
        return {"input_ids": ids(), "attention_mask": ones, "loss_mask": ones}
    return {"chosen_ids": ids(), "chosen_mask": ones, "rejected_ids": ids(), "rejected_mask": ones}


def logits_lm_loss(model):
    """The LM loss through full [B, T, vocab] logits (learners.lm.masked_lm_loss): the path the
    chunked head (models.lm_head, the default) replaces, kept here to measure what it buys."""
    from almost_jax.learners.lm import masked_lm_loss

    def loss_fn(params, batch, rng):
        logits, _ = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
        loss, count = masked_lm_loss(logits, batch["input_ids"], batch["loss_mask"])
        return loss, {"target_tokens": count}

    return loss_fn


def jax_worker(spec: dict) -> dict:
    import contextlib

    import jax
    from almost_jax.checkpoints.hf import load_hf_checkpoint, load_hf_config
    from almost_jax.checkpoints.load import with_score_head
    from almost_jax.config_lib import optimizer_block
    from almost_jax.learners.lm import make_lm_loss
    from almost_jax.learners.reward import make_reward_loss
    from almost_jax.models.llama import CausalLM, ScalarHeadModel, abstract_or_init
    from almost_jax.parallel import DEFAULT_RULES, MeshConfig, batch_sharding, make_mesh, mesh_context
    from almost_jax.train.optim import make_optimizer
    from almost_jax.train.state import create_sharded_state, state_shardings
    from almost_jax.train.step import make_train_step

    shape = spec["shape"]
    cfg = load_hf_config(spec["ckpt"]).replace(dtype=spec["dtype"], param_dtype="float32", remat=spec["remat"],
                                                remat_policy=spec.get("remat_policy", "none"),
                                                scan_layers=spec.get("scan_layers", False),
                                                attention_impl=spec["attention_impl"])
    _, params = load_hf_checkpoint(spec["ckpt"], cfg)
    head = "lm" if shape == "sft" else "scalar"
    if shape == "rm":
        params = with_score_head(params, cfg, jax.random.key(0), 0.0)
    model = CausalLM(cfg) if shape == "sft" else ScalarHeadModel(cfg)
    loss_fn = make_lm_loss(model) if shape == "sft" else make_reward_loss(model)
    if shape == "sft" and spec.get("lm_head") == "logits":
        loss_fn = logits_lm_loss(model)
    tx, schedule = make_optimizer(optimizer_block(lr=1e-5, schedule="constant", warmup_ratio=0.0, grad_clip=1.0), 100)
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    batch = random_batch(shape, spec["batch"], spec["seq"], cfg.vocab_size)
    with mesh_context(mesh, DEFAULT_RULES):
        shardings = state_shardings(abstract_or_init(cfg, jax.random.key(0), head), tx, mesh)
        state = create_sharded_state(params, tx, shardings, seed=0)
        del params
        batch_sh = {k: batch_sharding(mesh, 2) for k in batch}
        batch = jax.device_put(batch, batch_sh)
        step = make_train_step(loss_fn, shardings, batch_sh, schedule)
        state, metrics = step(state, batch)  # compile
        first_loss = float(metrics["loss"])
        compiled = step.lower(state, batch).compile()
        compiled_mem = compiled.memory_analysis()

        def run():
            nonlocal state
            for _ in range(spec["steps"]):
                state, _ = step(state, batch)
            jax.block_until_ready(state)

        run()  # warm
        trace = jax.profiler.trace(spec["profile"]) if spec.get("profile") else contextlib.nullcontext()
        with trace:
            seconds = common.best_of(run, spec["repeats"]) / spec["steps"]
    out = {"step_s": seconds, "first_loss": first_loss, "limits": common.device_limits(spec["dtype"], spec["peak_tflops"])}
    if compiled_mem is not None:
        out["xla_temp_gb"] = compiled_mem.temp_size_in_bytes / 2**30
    if spec.get("profile"):
        Path(spec["profile"], "hlo.txt").write_text(compiled.as_text())
        out["profile"] = common.op_profile(spec["profile"], spec["steps"] * spec["repeats"])
    return out


def hf_worker(spec: dict) -> dict:
    import contextlib

    import torch
    import transformers
    common.set_torch_threads()
    dev = "cuda" if spec["device"] == "gpu" else "cpu"
    shape = spec["shape"]
    if shape == "sft":
        model = transformers.LlamaForCausalLM.from_pretrained(spec["ckpt"], dtype=torch.float32)
    else:  # the trunk plus a fresh bias-free score head read at the last token, as ALMoST's RM
        model = transformers.LlamaForSequenceClassification.from_pretrained(spec["ckpt"], dtype=torch.float32,
                                                                            num_labels=1)
        torch.nn.init.zeros_(model.score.weight)
    model = model.to(dev).train()
    if spec["remat"]:
        model.gradient_checkpointing_enable()
    forward = torch.compile(model) if spec["mode"] == "compile" else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=dev == "cuda")
    batch = {k: torch.tensor(v, dtype=torch.long, device=dev)
             for k, v in random_batch(shape, spec["batch"], spec["seq"], model.config.vocab_size).items()}
    autocast = (torch.autocast(dev, dtype=getattr(torch, spec["dtype"])) if spec["dtype"] != "float32"
                else contextlib.nullcontext())

    def step():
        with autocast:
            if shape == "sft":
                loss = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               labels=batch["input_ids"]).loss
            else:
                ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
                scores = forward(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, 0].float()
                n = batch["chosen_ids"].shape[0]
                loss = -torch.nn.functional.logsigmoid(scores[:n] - scores[n:]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    first_loss = float(step())  # compiles in "compile" mode

    def run():
        for _ in range(spec["steps"]):
            step()
        if dev == "cuda":
            torch.cuda.synchronize()

    run()
    return {"step_s": common.best_of(run, spec["repeats"]) / spec["steps"], "first_loss": first_loss}


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--configs", default="", help="preset:BATCHxSEQ,... (default cpu: bench-10m:8x256,"
                                                 "bench-134m:4x512; else tinyllama-1.1b:4x2048)")
    p.add_argument("--shapes", default="sft,rm")
    p.add_argument("--hf-modes", default="eager,compile", help="transformers runs: eager and/or torch.compile")
    p.add_argument("--steps", type=int, default=2, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--remat", action="store_true", help="rematerialise layers (both frameworks)")
    p.add_argument("--remat-policy", default="none", help="almost_jax's remat policy (models.config.REMAT_POLICIES)")
    p.add_argument("--scan-layers", action="store_true", help="almost_jax's layers under lax.scan (stacked params)")
    p.add_argument("--lm-head", default="chunked", choices=["chunked", "logits"],
                   help="SFT loss through the chunked head (default) or full [B, T, vocab] logits")
    p.add_argument("--attention-impl", default="xla", choices=ATTENTION_IMPLS)
    p.add_argument("--profile", default="", help="write a jax.profiler trace of the timed steps here")
    args = p.parse_args()
    if common.serve_worker(args, {"jax": jax_worker, "hf": hf_worker}):
        return

    from almost_jax.models.config import get_config
    dtype = common.compute_dtype(args)
    configs = args.configs or ("bench-10m:8x256,bench-134m:4x512" if args.device == "cpu" else "tinyllama-1.1b:4x2048")
    hf_modes = [] if args.no_hf or args.device == "tpu" else [m for m in args.hf_modes.split(",") if m]
    rows, limits = [], {}
    for item in configs.split(","):
        preset, bt = item.split(":")
        batch, seq = (int(x) for x in bt.split("x"))
        ckpt = common.shared_checkpoint(__file__, preset, args)
        cfg = get_config(preset)
        for shape in args.shapes.split(","):
            spec = {"ckpt": ckpt, "shape": shape, "batch": batch, "seq": seq, "dtype": dtype,
                    "remat": args.remat, "remat_policy": args.remat_policy, "scan_layers": args.scan_layers,
                    "lm_head": args.lm_head, "attention_impl": args.attention_impl, "steps": args.steps,
                    "repeats": args.repeats, "device": args.device, "peak_tflops": args.peak_tflops,
                    "profile": f"{args.profile}/{preset}-{shape}" if args.profile else ""}
            tokens = batch * seq * (2 if shape == "rm" else 1)
            flops = common.train_flops_per_token(cfg, seq, lm_head=shape == "sft")
            results = {"almost_jax": common.run_worker(__file__, "jax", spec, args.device)}
            for mode in hf_modes:
                results[f"hf {mode}"] = common.run_worker(__file__, "hf", {**spec, "mode": mode}, args.device)
            limits = results["almost_jax"].get("limits", limits)
            jax_tok_s = None
            for name, res in results.items():
                row = {"config": f"{preset} {shape} {batch}x{seq}", "framework": name}
                if "error" in res:
                    print(f"{row['config']} {name} failed: {res['error']}", file=sys.stderr)
                    rows.append(row)
                    continue
                row.update(tok_s=tokens / res["step_s"], step_s=res["step_s"], loss0=res["first_loss"],
                           host_gb=res.get("peak_host_gb"), dev_gb=res.get("peak_device_gb"),
                           xla_temp_gb=res.get("xla_temp_gb"))
                if limits:
                    row["mfu"] = row["tok_s"] * flops / limits["peak_flops"]
                if name == "almost_jax":
                    jax_tok_s = row["tok_s"]
                elif jax_tok_s:
                    row["jax_vs"] = jax_tok_s / row["tok_s"]
                rows.append(row)
            if results["almost_jax"].get("profile"):
                common.print_profile(f"almost_jax {preset} {shape} {batch}x{seq} (trace: {spec['profile']})",
                                     results["almost_jax"]["profile"])
    if limits:
        print(f"\ndevice {limits['device_kind']} x{limits['n_devices']}, {dtype} compute / fp32 params; peak "
              f"{limits['peak_flops'] / 1e9:.0f} GFLOP/s ({limits['peak_source']})")
    common.print_table(f"train step (forward + backward + AdamW); almost_jax: scan_layers={args.scan_layers}, "
                       f"remat_policy={args.remat_policy}, lm_head={args.lm_head}, "
                       f"attention_impl={args.attention_impl}", rows, [
        ("config", "config", "{}"), ("framework", "framework", "{}"), ("tok_s", "tokens/s", "{:.0f}"),
        ("step_s", "s/step", "{:.3f}"), ("mfu", "MFU", "{:.1%}"), ("jax_vs", "almost_jax is", "{:.2f}x"),
        ("loss0", "step-0 loss", "{:.4f}"), ("host_gb", "host GB", "{:.2f}"), ("dev_gb", "device GB", "{:.2f}"),
        ("xla_temp_gb", "XLA temp GB", "{:.2f}")])
    common.write_json(args.json, {"dtype": dtype, "limits": limits, "rows": rows})


if __name__ == "__main__":
    main()
