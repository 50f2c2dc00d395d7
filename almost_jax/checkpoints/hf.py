"""Hugging Face LLaMA checkpoints <-> almost_jax params.

One table (`tensor_map`) says, for every HF tensor name, where it lives in the Flax tree and how it
is reshaped; loading and saving both read it, so the two directions cannot drift apart. With
scanned layers (`cfg.scan_layers`) a layer's tensor is one slice of a stacked param
(`model/layers/...` [layers, ...]); the table names the slice.
HF stores q/k projections in the rotate-half rotary layout, which is the layout our attention
uses, so HF weights load without the q/k row permutation that Meta's original interleaved
`consolidated.*.pth` layout would need (HF's own conversion script applies it).

Loading streams one tensor at a time (safetensors first; `.bin` only through
`torch.load(weights_only=True)`), placing each straight onto its sharding when shardings are
given, so host memory holds one tensor beyond the growing (possibly sharded) result, never two
copies of the model. Loading never executes code from a checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from almost_jax.config_lib import hf_llama_config
from almost_jax.data.errors import InputError, first_line, read_json_object
from almost_jax.data.schemas import temp_path_for
from almost_jax.models.config import LlamaConfig
from almost_jax.parallel.shard import to_host

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def load_hf_config(path: str | Path) -> LlamaConfig:
    f = Path(path) / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"no config.json in {path}: not a Hugging Face checkpoint directory")
    return hf_llama_config(f)


class Entry(NamedTuple):
    """Where one HF tensor lives: `path` in the Flax tree, `layer` (the slice of a stacked param,
    None when unstacked), and the reshapes both ways."""

    path: tuple[str, ...]
    layer: Optional[int]
    to_flax: Callable
    to_hf: Callable


def tensor_map(cfg: LlamaConfig, head: str = "lm") -> dict[str, Entry]:
    """HF name -> Entry, for the param layout `cfg` describes (unrolled or scanned layers)."""
    d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
    same = (lambda w: w, lambda w: w)
    linear = (lambda w: w.T, lambda w: w.T)

    def heads(n):  # [n*hd, d] <-> [d, n, hd]
        return (lambda w: w.T.reshape(d, n, hd), lambda w: w.reshape(d, n * hd).T)

    out_proj = (lambda w: w.T.reshape(h, hd, d), lambda w: w.reshape(h * hd, d).T)
    table = {"model.embed_tokens.weight": Entry(("model", "embed_tokens", "embedding"), None, *same),
             "model.norm.weight": Entry(("model", "norm", "scale"), None, *same)}
    per_layer = {"self_attn.q_proj.weight": (("self_attn", "q_proj", "kernel"), heads(h)),
                 "self_attn.k_proj.weight": (("self_attn", "k_proj", "kernel"), heads(kv)),
                 "self_attn.v_proj.weight": (("self_attn", "v_proj", "kernel"), heads(kv)),
                 "self_attn.o_proj.weight": (("self_attn", "o_proj", "kernel"), out_proj),
                 "mlp.gate_proj.weight": (("mlp", "gate_proj", "kernel"), linear),
                 "mlp.up_proj.weight": (("mlp", "up_proj", "kernel"), linear),
                 "mlp.down_proj.weight": (("mlp", "down_proj", "kernel"), linear),
                 "input_layernorm.weight": (("input_layernorm", "scale"), same),
                 "post_attention_layernorm.weight": (("post_attention_layernorm", "scale"), same)}
    for i in range(cfg.num_layers):
        for name, (sub, fns) in per_layer.items():
            if cfg.scan_layers:
                table[f"model.layers.{i}.{name}"] = Entry(("model", "layers") + sub, i, *fns)
            else:
                table[f"model.layers.{i}.{name}"] = Entry(("model", f"layers_{i}") + sub, None, *fns)
    if head == "lm" and not cfg.tie_word_embeddings:
        table["lm_head.weight"] = Entry(("lm_head", "kernel"), None, *linear)
    if head == "scalar":
        table["score_head.weight"] = Entry(("score_head", "kernel"), None, *linear)
    return table


def expected_shapes(cfg: LlamaConfig, head: str = "lm") -> dict[str, tuple[int, ...]]:
    """HF tensor shapes implied by the config (to name mismatches before converting anything)."""
    d, h, kv, hd, f, v = (cfg.hidden_size, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head, cfg.intermediate_size,
                          cfg.vocab_size)
    shapes = {}
    for name in tensor_map(cfg, head):
        if name.endswith(("q_proj.weight",)):
            shapes[name] = (h * hd, d)
        elif name.endswith(("k_proj.weight", "v_proj.weight")):
            shapes[name] = (kv * hd, d)
        elif name.endswith("o_proj.weight"):
            shapes[name] = (d, h * hd)
        elif name.endswith(("gate_proj.weight", "up_proj.weight")):
            shapes[name] = (f, d)
        elif name.endswith("down_proj.weight"):
            shapes[name] = (d, f)
        elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            shapes[name] = (d,)
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            shapes[name] = (v, d)
        elif name == "score_head.weight":
            shapes[name] = (1, d)
    return shapes


def _weight_files(path: Path) -> tuple[str, list[Path]]:
    for fmt, single, index in (("safetensors", "model.safetensors", "model.safetensors.index.json"),
                               ("bin", "pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path / index).is_file():
            weight_map = read_json_object(path / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise InputError(path / index, "missing or not an object {tensor name: shard file}", key="weight_map")
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{path / index} lists shard(s) {missing} that are not in {path}")
            return fmt, [path / s for s in shards]
        if (path / single).is_file():
            return fmt, [path / single]
    raise FileNotFoundError(f"no weights in {path}: looked for model.safetensors(.index.json) and "
                            f"pytorch_model.bin(.index.json)")


def iter_hf_tensors(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, numpy array) one tensor at a time; bf16 arrives as ml_dtypes.bfloat16."""
    path = Path(path)
    fmt, files = _weight_files(path)
    for f in files:
        if fmt == "safetensors":
            yield from _safetensors_tensors(f)
        else:
            yield from _torch_bin_tensors(f)


def _safetensors_tensors(f: Path) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open
    try:
        sf = safe_open(str(f), framework="flax")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise InputError(f, f"not a readable safetensors file ({e}); truncated or corrupt?") from None
    with sf:  # safe_open checks the header against the file size: a cut-off file fails above
        for name in sf.keys():
            yield name, np.asarray(sf.get_tensor(name))


def _torch_bin_tensors(f: Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{f} is a PyTorch .bin checkpoint; reading it needs torch installed "
                          f"(or convert it to safetensors)") from e
    try:
        state = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - corrupt zip, truncated file, or a pickle weights_only refuses
        raise InputError(f, f"not a readable PyTorch state dict ({first_line(e)})") from None
    if not isinstance(state, dict):
        raise InputError(f, f"expected a state dict {{name: tensor}}, got {type(state).__name__}")
    for name in list(state):
        t = state.pop(name)
        if not isinstance(t, torch.Tensor):
            raise InputError(f, f"holds a {type(t).__name__}, not a tensor", tensor=str(name))
        yield name, (t.float().numpy().astype("bfloat16") if t.dtype == torch.bfloat16 else t.numpy())


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _read(params: dict, entry: Entry):
    """The Flax value of one HF tensor: a param, or one layer's slice of a stacked param."""
    value = _get(params, entry.path)
    return value if entry.layer is None else value[entry.layer]


def _layer_sharding(stacked: NamedSharding) -> NamedSharding:
    """The sharding of one layer's slice of a stacked param (its leading axis dropped)."""
    return NamedSharding(stacked.mesh, P(*tuple(stacked.spec)[1:]))


class _Stacker:
    """Collects the per-layer slices of stacked params as they stream in; a param is complete
    (and placed on its sharding) once all its layers have arrived."""

    def __init__(self, num_layers: int, shardings):
        self.n, self.shardings, self.slices = num_layers, shardings, {}

    def add(self, entry: Entry, value):
        """Store one slice; returns the stacked param when this was its last missing layer."""
        sharding = None if self.shardings is None else _get(self.shardings, entry.path)
        if sharding is None:  # on the host: one preallocated buffer, no second copy
            buf = self.slices.setdefault(entry.path, [np.empty((self.n,) + value.shape, value.dtype), 0])
            buf[0][entry.layer] = value
            buf[1] += 1
            return self.slices.pop(entry.path)[0] if buf[1] == self.n else None
        parts = self.slices.setdefault(entry.path, {})
        parts[entry.layer] = jax.device_put(value, _layer_sharding(sharding))
        if len(parts) < self.n:
            return None
        del self.slices[entry.path]
        return jax.jit(lambda *xs: jnp.stack(xs), out_shardings=sharding)(*(parts[i] for i in range(self.n)))


def load_hf_checkpoint(path: str | Path, cfg: Optional[LlamaConfig] = None, head: str = "lm", shardings=None,
                       dtype: Optional[str] = None) -> tuple[LlamaConfig, dict]:
    """(config, params). `head="scalar"` reads an LM checkpoint's trunk (the score head is then
    absent; see checkpoints.load.with_score_head) or an exported reward model with its head."""
    path = Path(path)
    file_cfg = load_hf_config(path)
    cfg = cfg or file_cfg
    if cfg.vocab_size != file_cfg.vocab_size:
        raise ValueError(f"{path}: checkpoint vocab_size {file_cfg.vocab_size} != model vocab_size {cfg.vocab_size}")
    table, shapes = tensor_map(cfg, head), expected_shapes(cfg, head)
    params, seen, stacker = {}, set(), _Stacker(cfg.num_layers, shardings)
    for name, array in iter_hf_tensors(path):
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name not in table:
            if head == "scalar" and name == "lm_head.weight":
                continue  # an LM checkpoint read as a reward-model trunk
            raise ValueError(f"{path}: unexpected tensor {name!r} (shape {array.shape}); the config describes "
                             f"{len(table)} tensors - is this a LLaMA-family checkpoint matching config.json?")
        if tuple(array.shape) != shapes[name]:
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(array.shape)} but the config expects "
                             f"{shapes[name]}")
        entry = table[name]
        value = entry.to_flax(array)
        if dtype is not None:
            value = value.astype(dtype)
        if entry.layer is not None:
            value = stacker.add(entry, value)
        elif shardings is not None:
            value = jax.device_put(value, _get(shardings, entry.path))
        if value is not None:
            _set(params, entry.path, value)
        seen.add(name)
    missing = [n for n in table if n not in seen and not (head == "scalar" and n == "score_head.weight")]
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                         f"({len(missing)} of {len(table)})")
    return cfg, params



def replace_dir(tmp: Path, dest: Path) -> None:
    """Put the finished directory `tmp` at `dest`, replacing an old one only once the new one is
    complete (a killed writer leaves either the old directory or the new one, never a mix)."""
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dest)


def save_hf_checkpoint(params: dict, cfg: LlamaConfig, path: str | Path, max_shard_bytes: int = 5 * 2**30,
                       dtype: Optional[str] = None) -> Path:
    """config.json + safetensors (sharded with an index past max_shard_bytes), written into a temp
    directory beside `path` and renamed into place, so a crash never leaves half an export."""
    from safetensors.numpy import save_file
    path = Path(path)
    head = "scalar" if "score_head" in params else "lm"
    table = tensor_map(cfg, head)
    if jax.process_index() != 0:
        for entry in table.values():  # every host takes part in gathering sharded arrays
            to_host(_read(params, entry))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp_path_for(path))  # removes a killed export's leftovers; umask mode, unlike mkdtemp's 0700
    tmp.mkdir()
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name, entry in table.items():
            array = np.ascontiguousarray(entry.to_hf(to_host(_read(params, entry))))
            if dtype is not None:
                array = array.astype(dtype)
            if size and size + array.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = array
            size += array.nbytes
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / fname), metadata={"format": "pt"})
                weight_map.update({n: fname for n in shard})
            total = sum(a.nbytes for s in shards for a in s.values())
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2))
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
