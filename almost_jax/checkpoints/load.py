"""Load model params for a job from whatever the config points at: an almost_jax params dir
(orbax) or a Hugging Face checkpoint dir (config.json + safetensors / .bin), in the layer layout
the model config asks for (unrolled `layers_{i}` or scanned `layers`), whichever was stored."""
from __future__ import annotations

from pathlib import Path

import jax

from almost_jax.checkpoints.orbax_io import load_params
from almost_jax.models.config import LlamaConfig
from almost_jax.models.llama import layers_are_stacked, stack_layers, unstack_layers


def is_hf_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def load_model_params(path: str | Path, model_cfg: LlamaConfig, head: str = "lm", shardings=None) -> dict:
    """Params for `head` ("lm" or "scalar") from `path`; sharded when `shardings` is given.

    Loading a scalar-head model from an LM checkpoint keeps the trunk and returns no score head
    (see `with_score_head`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    if is_hf_dir(path):
        from almost_jax.checkpoints.hf import load_hf_checkpoint
        _, params = load_hf_checkpoint(path, model_cfg, head=head, shardings=shardings)
        return params
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), _stored_shapes(path))
    stored_stacked = layers_are_stacked(abstract)
    if shardings is None:
        params = load_params(path)
    else:
        from almost_jax.parallel.shard import with_shardings
        stored_sh = (shardings if stored_stacked == model_cfg.scan_layers
                     else _relayout_shardings(shardings, model_cfg.num_layers))
        params = load_params(path, with_shardings(abstract, _match(stored_sh, abstract)))
    if stored_stacked == model_cfg.scan_layers:
        return params
    convert = stack_layers if model_cfg.scan_layers else unstack_layers
    if shardings is None:
        return convert(params)
    out = _match(shardings, jax.eval_shape(convert, params))
    return jax.jit(convert, out_shardings=out, donate_argnums=0)(params)


def _relayout_shardings(shardings, num_layers: int):
    """The model's param shardings for the other layer layout (a stacked param's sharding is its
    layers' sharding behind a leading, unsharded `layers` axis)."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    trunk = dict(shardings["model"])
    if "layers" in trunk:
        one = jax.tree.map(lambda s: NamedSharding(s.mesh, P(*tuple(s.spec)[1:])), trunk.pop("layers"))
        trunk.update({f"layers_{i}": one for i in range(num_layers)})
    else:
        layers = [trunk.pop(f"layers_{i}") for i in range(num_layers)]
        trunk["layers"] = jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)), layers[0])
    return {**shardings, "model": trunk}


def _stored_shapes(path: Path):
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path.absolute())  # orbax finds no item metadata under a relative path
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    if not tree:
        raise ValueError(f"{path}: no parameter metadata in this checkpoint (not an almost_jax params dir?)")
    return tree


def _match(shardings, abstract):
    """Shardings for the stored tree: the model's shardings where the names agree (an LM
    checkpoint read for a scalar-head model has an lm_head the model lacks: replicate it)."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    any_sharding = jax.tree.leaves(shardings)[0]
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(shardings)}
    return jax.tree_util.tree_map_with_path(
        lambda k, _: flat.get(jax.tree_util.keystr(k), NamedSharding(any_sharding.mesh, P())), abstract)


def with_score_head(lm_params: dict, model_cfg: LlamaConfig, rng, std: float = 0.02) -> dict:
    """A scalar-head model's params from an LM's: the trunk as is, a fresh bias-free head
    (std 0 = zero-initialised, as AlpacaFarm initialises its value head)."""
    import jax.numpy as jnp
    kernel = (jnp.zeros if std == 0 else (lambda s, d: std * jax.random.normal(rng, s, d)))(
        (model_cfg.hidden_size, 1), jnp.dtype(model_cfg.param_dtype))
    return {"model": lm_params["model"], "score_head": {"kernel": kernel}}
