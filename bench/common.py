"""What every benchmark shares: the device flag, one worker process per measurement, the
machine's peak FLOP/s and memory bandwidth, model FLOP counts, a shared checkpoint, tables.

Each measurement (one framework, one config) runs in its own worker process, so JAX and torch
never compete for threads or device memory, and a process's peak memory is that config's own.
Workers print one line `RESULT {json}`; the driver collects them into one table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
# Dense peak of one chip in bf16 (vendor datasheets), used when --peak-tflops is not given.
# On CPU the peak is measured instead (a large fp32 matmul).
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
                         "TPU v5": 459.0, "TPU v6 lite": 918.0}
DATASHEET_HBM_TBPS = {"H100": 3.35, "H200": 4.8, "A100": 2.0, "TPU v4": 1.2, "TPU v5 lite": 0.82, "TPU v5": 2.76,
                      "TPU v6 lite": 1.64}


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", choices=sorted(JAX_PLATFORM), default="cpu",
                   help="where to run both frameworks (torch is skipped on tpu)")
    p.add_argument("--dtype", default=None, help="compute dtype (default: float32 on cpu, bfloat16 elsewhere)")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers reference")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="override the peak used for MFU")
    p.add_argument("--ckpt-dir", default=str(REPO / "work_dir" / "bench"),
                   help="where the shared random checkpoints are kept between runs")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--spec", default="", help=argparse.SUPPRESS)
    return p


def compute_dtype(args) -> str:
    return args.dtype or ("float32" if args.device == "cpu" else "bfloat16")


def worker_env(device: str) -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = JAX_PLATFORM[device]
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # report what a config needs, not 75% of HBM
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_worker(script: str, worker: str, spec: dict, device: str, timeout: int = 3600) -> dict:
    """Run `script --worker=worker --spec=json` in a fresh process and return its RESULT dict
    (or {"error": ...} so one failed measurement does not hide the others)."""
    cmd = [sys.executable, script, f"--worker={worker}", f"--spec={json.dumps(spec)}", f"--device={device}"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(device), timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            out.setdefault("wall_s", time.time() - t0)
            return out
    tail = (proc.stderr or proc.stdout)[-1500:]
    return {"error": f"{worker} exited {proc.returncode}: {tail}"}


def serve_worker(args, workers: dict) -> bool:
    """In a worker process (--worker=NAME): run that measurement, or "ckpt" (write the shared
    checkpoint), print its RESULT line and return True; in the driver return False."""
    if not args.worker:
        return False
    spec = json.loads(args.spec)
    everything = {"ckpt": lambda s: {"path": make_hf_checkpoint(s["preset"], s["dir"])}, **workers}
    emit(everything[args.worker](spec))
    return True


def shared_checkpoint(script: str, preset: str, args) -> str:
    """The preset's random-weight HF checkpoint (written once, by a CPU worker)."""
    res = run_worker(script, "ckpt", {"preset": preset, "dir": args.ckpt_dir}, "cpu")
    if "error" in res:
        sys.exit(res["error"])
    return res["path"]


def emit(result: dict) -> None:
    """A worker's answer: one line, last on stdout."""
    result["peak_host_gb"] = peak_host_gb()
    dev = device_peak_gb()
    if dev is not None:
        result["peak_device_gb"] = dev
    print("RESULT " + json.dumps(result), flush=True)


def peak_host_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def device_peak_gb():
    """Peak accelerator memory of this process (JAX or torch), None on CPU."""
    if "torch" in sys.modules:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**30
    if "jax" in sys.modules:
        import jax
        stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
        if stats and "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**30
    return None


def set_torch_threads() -> None:
    """torch uses every core of the machine, like XLA does (it defaults to physical cores)."""
    import torch
    torch.set_num_threads(os.cpu_count() or 1)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of `fn()` over `repeats` calls (fn must block until its work is done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ----------------------------------------------------------------- the machine's limits

def measured_peak_flops(dtype: str = "float32") -> float:
    """FLOP/s of a large square matmul in JAX on the default device (the CPU 'peak')."""
    import jax
    import jax.numpy as jnp
    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    return 2 * n ** 3 / best_of(lambda: f(a, b).block_until_ready(), 5)


def measured_bandwidth() -> float:
    """Bytes/s of reading a large array once (a sum): what a memory-bound decode step streams."""
    import jax
    import jax.numpy as jnp
    n = (256 if jax.default_backend() == "cpu" else 2048) * 2**20 // 4
    x = jnp.ones((n,), jnp.float32)
    f = jax.jit(jnp.sum)
    f(x).block_until_ready()
    return n * 4 / best_of(lambda: f(x).block_until_ready(), 5)


def device_limits(dtype: str, peak_tflops: float = 0.0) -> dict:
    """Peak FLOP/s (for MFU) and memory bandwidth (for the decode bound) of this device."""
    import jax
    kind = jax.devices()[0].device_kind
    out = {"device_kind": kind, "n_devices": jax.device_count()}
    sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k.lower() in kind.lower()), None)
    if peak_tflops:
        out["peak_flops"], out["peak_source"] = peak_tflops * 1e12, "--peak-tflops"
    elif jax.default_backend() != "cpu" and sheet:
        out["peak_flops"], out["peak_source"] = sheet * 1e12, f"datasheet bf16 ({kind})"
    else:
        out["peak_flops"], out["peak_source"] = measured_peak_flops(dtype), f"measured {dtype} matmul"
    bw_sheet = next((v for k, v in DATASHEET_HBM_TBPS.items() if k.lower() in kind.lower()), None)
    out["bandwidth"] = bw_sheet * 1e12 if bw_sheet and jax.default_backend() != "cpu" else measured_bandwidth()
    return out


# ----------------------------------------------------------------- model arithmetic

def matmul_params(cfg) -> int:
    """Parameters that take part in a matmul per token: everything but the embedding lookup
    (the LM head counts, tied or not)."""
    return cfg.num_params(include_embeddings=False) + cfg.vocab_size * cfg.hidden_size


def train_flops_per_token(cfg, seq_len: int, lm_head: bool = True) -> float:
    """6N + 12 * layers * d_attn * T (PaLM's MFU convention: causal attention counted in full).
    A reward model has no LM head: its N leaves the vocab projection out."""
    d_attn = cfg.num_heads * cfg.dim_per_head
    n = matmul_params(cfg) - (0 if lm_head else cfg.vocab_size * cfg.hidden_size)
    return 6 * n + 12 * cfg.num_layers * d_attn * seq_len


def decode_flops_per_token(cfg, context: int) -> float:
    d_attn = cfg.num_heads * cfg.dim_per_head
    return 2 * matmul_params(cfg) + 4 * cfg.num_layers * d_attn * context


def decode_bytes_per_step(cfg, batch: int, context: int, bytes_per_param: int) -> float:
    """Weights once per step plus every row's KV cache (the floor of a memory-bound decode)."""
    kv = 2 * cfg.num_layers * context * cfg.kv_heads * cfg.dim_per_head * bytes_per_param * batch
    return matmul_params(cfg) * bytes_per_param + kv


# ----------------------------------------------------------------- a shared checkpoint

def make_hf_checkpoint(preset: str, directory: str, seed: int = 0) -> str:
    """Random weights for `preset`, written once as a Hugging Face checkpoint that both frameworks
    load (JAX through almost_jax's converter), so they run the very same model. Run it in a CPU
    worker: host memory, not the accelerator's, holds the fp32 init."""
    import jax
    from almost_jax.checkpoints.hf import save_hf_checkpoint
    from almost_jax.models.config import get_config
    from almost_jax.models.llama import init_params
    cfg = get_config(preset)
    path = Path(directory) / preset
    if not (path / "config.json").exists():
        save_hf_checkpoint(init_params(cfg, jax.random.key(seed)), cfg, path)
    return str(path)


# ----------------------------------------------------------------- where a step's time goes

def hlo_op_names(hlo_text: str) -> dict[str, str]:
    """Instruction name -> the jax op it came from (`metadata={op_name=...}`) in optimized HLO."""
    out = {}
    for m in re.finditer(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]+)"', hlo_text, re.M):
        out.setdefault(m.group(1), m.group(2))
    return out


def op_profile(trace_dir: str, steps: int = 1) -> dict:
    """Where a step's time goes, from a `jax.profiler` trace on CPU (with the optimized HLO saved
    beside it as hlo.txt, to name each op's source): per XLA op, wall time summed over XLA's
    threads per step, and the same grouped by source (layer index dropped, forward / backward,
    matmul or not), each with its share of all op time."""
    from collections import Counter

    from jax.profiler import ProfileData
    files = sorted(Path(trace_dir).glob("**/*.xplane.pb"), key=lambda f: f.stat().st_mtime)
    if not files:
        return {}
    hlo = Path(trace_dir) / "hlo.txt"
    names = hlo_op_names(hlo.read_text()) if hlo.is_file() else {}
    per_op = Counter()
    for plane in ProfileData.from_file(str(files[-1])).planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for ev in line.events:  # XLA's thunks; skip thread-pool bookkeeping
                if not ev.name.startswith(("Threadpool", "ThunkExecutor", "end:", "Slinky")):
                    per_op[ev.name] += ev.duration_ns
    total = sum(per_op.values()) or 1
    groups = Counter()
    for name, ns in per_op.items():
        groups[_op_group(name, names.get(name, ""))] += ns
    row = lambda key, ns: {"op": key, "ms": ns / 1e6 / steps, "share": ns / total}  # noqa: E731
    return {"total_ms": total / 1e6 / steps,
            "ops": [dict(row(n, ns), source=_short_source(names.get(n, ""))) for n, ns in per_op.most_common(40)],
            "groups": [row(k, ns) for k, ns in groups.most_common()]}


def _short_source(op_name: str) -> str:
    s = re.sub(r"^jit\([^)]*\)/", "", op_name)
    return re.sub(r"^transpose\(jvp\(([\w.]*)\)\)", r"bwd(\1)", re.sub(r"^jvp\(([\w.]*)\)", r"fwd(\1)", s))


def _op_group(xla_name: str, op_name: str) -> str:
    """e.g. 'bwd model/layers_*/mlp/jit(silu) [elementwise]' for an op of any layer."""
    src = _short_source(op_name)
    phase = "bwd" if src.startswith("bwd") else "fwd" if src.startswith("fwd") else "other"
    path = re.sub(r"layers_\d+", "layers_*", re.sub(r"^(bwd|fwd)\([\w.]*\)/?", "", src)) or "-"
    kind = "matmul" if xla_name.startswith(("ynn_fusion", "dot", "onednn", "xnn")) else "other"
    return f"{phase} {path} [{kind}]"


def print_profile(title: str, profile: dict, top: int = 12) -> None:
    cols = [("op", "XLA op", "{}"), ("ms", "ms/step", "{:.0f}"), ("share", "share", "{:.1%}")]
    print_table(f"{title}: top ops of {profile['total_ms']:.0f} ms of XLA op time per step", profile["ops"][:top],
                cols + [("source", "from", "{}")])
    print_table(f"{title}: grouped by source", profile["groups"][:top],
                [("op", "source [kind]", "{}")] + cols[1:])


def print_table(title: str, rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> None:
    """columns: (key, header, format) e.g. ("tok_s", "tokens/s", "{:.0f}"); missing -> '-'."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str, payload) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))
