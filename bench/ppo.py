"""One RL iteration of the job's own code (jobs/rl.py), split into its phases: rollout, scoring
(policy / reference / value / RM forward passes, the text round trip to the RM, advantages), and
training (ppo_epochs x minibatch updates).

    .venv/bin/python bench/ppo.py                                  # CPU: bench-10m policy and RM, PPO
    .venv/bin/python bench/ppo.py --algorithm=grpo                 # RLOO / GRPO: no value model
    .venv/bin/python bench/ppo.py --device=gpu --preset=tinyllama-1.1b --rollout-batch=512 --step-batch=64 \\
        --query-len=192 --response-len=300

The worker runs `jobs.rl.run` itself on `--iterations` + 1 steps and reads the phase times the job
logs for every step (metrics.jsonl: time_rollout_s, time_scoring_s, time_train_s); the first step
compiles everything and is left out. Models: random weights of the preset (one shared HF
checkpoint), the RM its trunk with a random head saved with a scoring contract, a word-level
tokenizer over the whole vocabulary and prompts of random words that fill the query length. The
algorithm's defaults (`rl_config`), with the batch sizes and lengths given here.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def job_inputs(spec: dict, directory: Path) -> None:
    """A word-level tokenizer covering the model's whole vocabulary (as a real checkpoint's does: no
    padded rows) with its special tokens in tokenizer_config.json, prompts of random words filling
    the query length, and a reward model with its contract, written into `directory`."""
    import dataclasses
    import json

    import jax
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers
    from almost_jax.checkpoints.hf import load_hf_checkpoint, load_hf_config
    from almost_jax.checkpoints.load import with_score_head
    from almost_jax.checkpoints.orbax_io import save_params
    from almost_jax.data.rm_data import RewardContract

    cfg = load_hf_config(spec["ckpt"]).replace(dtype=spec["dtype"], param_dtype="float32", remat=spec["remat"])
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {"<unk>": 0, "<|begin_of_text|>": 1, "<|end_of_text|>": 2, **{f"w{i}": i for i in range(3, cfg.vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(  # its special tokens, as a checkpoint names them
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}))
    rs = np.random.RandomState(0)  # each prompt longer than the query length: every query is Q tokens
    prompts = [" ".join(f"w{i}" for i in rs.randint(3, cfg.vocab_size, spec["query_len"])) for _ in range(spec["rollout_batch"])]
    (directory / "prompts.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n"
                                                     for i, p in enumerate(prompts)))
    _, lm = load_hf_checkpoint(spec["ckpt"], cfg)
    save_params(directory / "rm" / "params", with_score_head(lm, cfg, jax.random.key(1), 0.02))
    RewardContract(max_len=spec["query_len"] + spec["response_len"] + 16, reward_stats_n=1,
                   architecture=dataclasses.asdict(cfg), tokenizer=str(directory / "tokenizer.json"),
                   tokenizer_vocab_size=cfg.vocab_size).save(directory / "rm")


def jax_worker(spec: dict) -> dict:
    import shutil
    import tempfile

    import numpy as np
    from almost_jax.jobs.rl import rl_config, run
    from almost_jax.learners.rl import algorithm
    from almost_jax.train.metrics import read_metrics

    directory = Path(tempfile.mkdtemp(prefix="bench_rl_"))
    try:
        job_inputs(spec, directory)
        cfg = rl_config(spec["algorithm"])
        cfg.update(dict(workdir=str(directory / "work"), prompts=str(directory / "prompts.jsonl"),
                        tokenizer=str(directory / "tokenizer.json"), policy_init=spec["ckpt"],
                        rm_path=str(directory / "rm")))
        cfg.policy_model.update(dict(hf_path=spec["ckpt"], dtype=spec["dtype"], param_dtype="float32",
                                     remat=spec["remat"]))
        cfg.rl.update(dict(steps=spec["iterations"] + 1, rollout_batch_size=spec["rollout_batch"],
                           step_batch_size=spec["step_batch"], query_len=spec["query_len"],
                           response_len=spec["response_len"], checkpoint_every=10**6, progress=False))
        cfg.mesh.update(dict(data=1, fsdp=-1, tensor=1))
        run(cfg)
        rows = [r for r in read_metrics(directory / "work" / "metrics.jsonl") if "rl/time_train_s" in r][1:]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    phases = {p: float(np.mean([r[f"rl/time_{p}_s"] for r in rows])) for p in ("rollout", "scoring", "train")}
    return {"phases": phases, "epochs": int(cfg.rl.ppo_epochs), "value_model": algorithm(cfg.rl).value_model,
            "response_tokens": float(np.mean([r["rl/response_length"] for r in rows])),
            "limits": common.device_limits(spec["dtype"], spec["peak_tflops"])}


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="", help="policy/value/RM preset (default: bench-10m on cpu, "
                                                "tinyllama-1.1b elsewhere)")
    p.add_argument("--algorithm", default="ppo", choices=("ppo", "rloo", "grpo"))
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
    spec = {"ckpt": common.shared_checkpoint(__file__, preset, args), "dtype": common.compute_dtype(args),
            "algorithm": args.algorithm, "rollout_batch": args.rollout_batch, "step_batch": args.step_batch,
            "query_len": args.query_len, "response_len": args.response_len, "iterations": args.iterations,
            "remat": args.remat, "peak_tflops": args.peak_tflops}
    res = common.run_worker(__file__, "jax", spec, args.device)
    if "error" in res:
        sys.exit(res["error"])
    from almost_jax.models.config import get_config
    cfg = get_config(preset)
    B, Q, E = args.rollout_batch, args.query_len, res["epochs"]
    R = res["response_tokens"]  # replies may end early (EOS / stop string): count what was generated
    seq = Q + args.response_len  # every forward pass runs over the padded rollout
    trained_rows = B // args.step_batch * args.step_batch
    # model FLOPs of each phase (a forward pass is a third of forward + backward): decode; forward
    # passes of policy and reference (LM head), RM and, for PPO, value model (scalar head); training:
    # the policy (and the value model), forward + backward, E epochs
    lm, scalar = common.train_flops_per_token(cfg, seq), common.train_flops_per_token(cfg, seq, lm_head=False)
    critic = scalar if res["value_model"] else 0.0
    flops = {"rollout": B * R * common.decode_flops_per_token(cfg, Q + R / 2),
             "scoring": B * seq * (2 * lm + scalar + critic) / 3,
             "train": E * trained_rows * seq * (lm + critic)}
    tokens = {"rollout": B * R, "scoring": B * seq, "train": E * trained_rows * seq}
    total = sum(res["phases"].values())
    peak = res["limits"]["peak_flops"]
    rows = [{"phase": k, "seconds": v, "share": v / total, "tok_s": tokens[k] / v, "mfu": flops[k] / v / peak}
            for k, v in res["phases"].items()]
    rows.append({"phase": "iteration", "seconds": total, "share": 1.0, "mfu": sum(flops.values()) / total / peak})
    models = "policy, value and RM" if res["value_model"] else "policy and RM"
    print(f"\n{args.algorithm.upper()} iteration (jobs/rl.py): {preset} {models} ({cfg.num_params() / 1e6:.0f}M each), "
          f"rollout batch {B}, minibatch {args.step_batch}, {E} epochs, query {Q} + response {args.response_len} tokens "
          f"(mean reply {R:.0f}); device {res['limits']['device_kind']}, peak {peak / 1e9:.0f} GFLOP/s "
          f"({res['limits']['peak_source']})")
    common.print_table("RL phases", rows, [("phase", "phase", "{}"), ("seconds", "seconds", "{:.2f}"),
                                           ("share", "share", "{:.0%}"), ("tok_s", "tokens/s", "{:.0f}"),
                                           ("mfu", "MFU", "{:.1%}")])
    print(f"peak memory: host {res['peak_host_gb']:.2f} GB"
          + (f", device {res['peak_device_gb']:.2f} GB" if "peak_device_gb" in res else ""))
    common.write_json(args.json, {"preset": preset, "algorithm": args.algorithm, "rows": rows, "limits": res["limits"]})


if __name__ == "__main__":
    main()
