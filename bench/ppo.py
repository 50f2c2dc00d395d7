"""One PPO iteration, split into its phases: rollout, scoring (policy / reference / value / RM
forward passes + advantages), and training (ppo_epochs x minibatch updates of policy and value).

    .venv/bin/python bench/ppo.py                                  # CPU: bench-10m policy and RM
    .venv/bin/python bench/ppo.py --device=gpu --preset=tinyllama-1.1b --rollout-batch=512 --step-batch=64 \\
        --query-len=192 --response-len=300

The phases run the functions the PPO job runs (learners/ppo.py, the jitted decoder), on token
ids: the job's text round trip (decode replies, re-tokenise them for the RM) is host work left
out here. AlpacaFarm's settings (2 epochs, kl 0.0067, gamma = lambda = 1) from `ppo_config()`.
Timings are the mean over `--iterations` after one warm-up iteration that compiles everything.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def jax_worker(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from almost_jax.checkpoints.hf import load_hf_checkpoint, load_hf_config
    from almost_jax.checkpoints.load import with_score_head
    from almost_jax.jobs.ppo import ppo_config
    from almost_jax.learners.ppo import (make_advantage_fn, make_ppo_loss, make_scoring_fn, ppo_epochs,
                                         rollout_arrays)
    from almost_jax.models.llama import CausalLM, ScalarHeadModel, abstract_or_init
    from almost_jax.parallel import DEFAULT_RULES, MeshConfig, batch_sharding, logical_shardings, make_mesh, mesh_context
    from almost_jax.sampling import SamplingConfig, make_generate_fn
    from almost_jax.train.optim import make_optimizer
    from almost_jax.train.state import abstract_state, create_sharded_state
    from almost_jax.train.step import make_train_step

    job = ppo_config()
    pc = job.ppo
    pc.rollout_batch_size, pc.step_batch_size = spec["rollout_batch"], spec["step_batch"]
    pc.query_len, pc.response_len = spec["query_len"], spec["response_len"]
    B, Q, R = spec["rollout_batch"], spec["query_len"], spec["response_len"]
    cfg = load_hf_config(spec["ckpt"]).replace(dtype=spec["dtype"], param_dtype="float32", remat=spec["remat"])
    _, lm = load_hf_checkpoint(spec["ckpt"], cfg)
    rm_params = with_score_head(lm, cfg, jax.random.key(1), 0.02)
    policy, value = CausalLM(cfg), ScalarHeadModel(cfg)
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    boxed = {"policy": abstract_or_init(cfg, jax.random.key(0), "lm"),
             "value": abstract_or_init(cfg, jax.random.key(0), "scalar")}
    tx, schedule = make_optimizer(job.optimizer, 1000)
    with mesh_context(mesh, DEFAULT_RULES):
        st_sh = logical_shardings(abstract_state(boxed, tx), mesh, DEFAULT_RULES)
        value_init = {"model": lm["model"], "score_head": {"kernel": jnp.zeros_like(rm_params["score_head"]["kernel"])}}
        state = create_sharded_state({"policy": lm, "value": value_init}, tx, st_sh, 0)
        ref_params = jax.device_put(lm)
        rm_params = jax.device_put(rm_params)
        keys = ("input_ids", "attention_mask", "response_mask", "old_logp", "old_values", "advantages", "returns")
        step_fn = make_train_step(make_ppo_loss(policy, value, Q, pc), st_sh, {k: batch_sharding(mesh, 2) for k in keys},
                                  schedule)
        generate = make_generate_fn(policy, SamplingConfig(temperature=float(pc.temperature), max_new_tokens=R),
                                    eos_id=-1, pad_id=0)
        scoring = make_scoring_fn(policy, value, Q, float(pc.temperature))
        advantages = make_advantage_fn(pc)
        rm_score = jax.jit(lambda p, ids, mask: value.apply({"params": p}, ids, mask))
        queries = np.random.RandomState(0).randint(3, cfg.vocab_size, (B, Q)).astype(np.int32)

        def iteration(it: int) -> dict:
            nonlocal state
            t0 = time.perf_counter()
            out = generate(state.params["policy"], queries, np.ones_like(queries), jax.random.key(it))
            tokens = np.asarray(out["tokens"])
            t1 = time.perf_counter()
            arrays = rollout_arrays(queries, tokens, Q, R, 0)
            scores = rm_score(rm_params, arrays["input_ids"], arrays["attention_mask"])
            old_logp, ref_logp, old_values = scoring(state.params["policy"], ref_params, state.params["value"], arrays)
            adv, ret, _ = advantages(scores, old_logp, ref_logp, old_values, jnp.asarray(arrays["response_mask"]),
                                     float(pc.kl_coef))
            jax.block_until_ready(adv)
            t2 = time.perf_counter()
            rollout = {**arrays, "old_logp": old_logp, "old_values": old_values, "advantages": adv, "returns": ret}
            state, _ = ppo_epochs(step_fn, state, rollout, int(pc.step_batch_size), int(pc.ppo_epochs), (0, it))
            jax.block_until_ready(state.params)
            t3 = time.perf_counter()
            return {"rollout": t1 - t0, "scoring": t2 - t1, "train": t3 - t2}

        iteration(0)  # compile
        times = [iteration(i + 1) for i in range(spec["iterations"])]
    mean = {k: float(np.mean([t[k] for t in times])) for k in times[0]}
    return {"phases": mean, "epochs": int(pc.ppo_epochs),
            "limits": common.device_limits(spec["dtype"], spec["peak_tflops"])}


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="", help="policy/value/RM preset (default: bench-10m on cpu, "
                                                "tinyllama-1.1b elsewhere)")
    p.add_argument("--rollout-batch", type=int, default=64)
    p.add_argument("--step-batch", type=int, default=32)
    p.add_argument("--query-len", type=int, default=64)
    p.add_argument("--response-len", type=int, default=64)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--remat", action="store_true")
    args = p.parse_args()
    if common.serve_worker(args, {"jax": jax_worker}):
        return
    preset = args.preset or ("bench-10m" if args.device == "cpu" else "tinyllama-1.1b")
    spec = {"ckpt": common.shared_checkpoint(__file__, preset, args), "dtype": common.compute_dtype(args), "rollout_batch": args.rollout_batch,
            "step_batch": args.step_batch, "query_len": args.query_len, "response_len": args.response_len,
            "iterations": args.iterations, "remat": args.remat, "peak_tflops": args.peak_tflops}
    res = common.run_worker(__file__, "jax", spec, args.device)
    if "error" in res:
        sys.exit(res["error"])
    from almost_jax.models.config import get_config
    cfg = get_config(preset)
    B, Q, R, E = args.rollout_batch, args.query_len, args.response_len, res["epochs"]
    seq = Q + R
    # model FLOPs of each phase (a forward pass is a third of forward + backward): decode; forward
    # passes of policy and reference (LM head) and of value model and RM (scalar head); training:
    # policy and value, forward + backward, E epochs
    lm, scalar = common.train_flops_per_token(cfg, seq), common.train_flops_per_token(cfg, seq, lm_head=False)
    flops = {"rollout": B * R * common.decode_flops_per_token(cfg, Q + R / 2),
             "scoring": B * seq * 2 * (lm + scalar) / 3,
             "train": E * B * seq * (lm + scalar)}
    tokens = {"rollout": B * R, "scoring": B * seq, "train": E * B * seq}
    total = sum(res["phases"].values())
    peak = res["limits"]["peak_flops"]
    rows = [{"phase": k, "seconds": v, "share": v / total, "tok_s": tokens[k] / v, "mfu": flops[k] / v / peak}
            for k, v in res["phases"].items()]
    rows.append({"phase": "iteration", "seconds": total, "share": 1.0, "mfu": sum(flops.values()) / total / peak})
    print(f"\nPPO iteration: {preset} policy, value and RM ({cfg.num_params() / 1e6:.0f}M each), rollout batch {B}, "
          f"minibatch {args.step_batch}, {E} epochs, query {Q} + response {R} tokens; "
          f"device {res['limits']['device_kind']}, peak {peak / 1e9:.0f} GFLOP/s ({res['limits']['peak_source']})")
    common.print_table("PPO phases", rows, [("phase", "phase", "{}"), ("seconds", "seconds", "{:.2f}"),
                                            ("share", "share", "{:.0%}"), ("tok_s", "tokens/s", "{:.0f}"),
                                            ("mfu", "MFU", "{:.1%}")])
    print(f"peak memory: host {res['peak_host_gb']:.2f} GB"
          + (f", device {res['peak_device_gb']:.2f} GB" if "peak_device_gb" in res else ""))
    common.write_json(args.json, {"preset": preset, "rows": rows, "limits": res["limits"]})


if __name__ == "__main__":
    main()
