"""Load model params for a job from whatever the config points at: an almost_jax params dir
(orbax) or a Hugging Face checkpoint dir (config.json + safetensors / .bin)."""
from __future__ import annotations

from pathlib import Path

import jax

from almost_jax.checkpoints.orbax_io import load_params
from almost_jax.models.config import LlamaConfig


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
    if shardings is not None:
        from almost_jax.parallel.shard import with_shardings
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), _stored_shapes(path))
        return load_params(path, with_shardings(abstract, _match(shardings, abstract)))
    return load_params(path)


def _stored_shapes(path: Path):
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    return getattr(tree, "tree", tree)


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
