"""Turn logical annotations into NamedShardings and place trees and batches on the mesh."""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from almost_jax.parallel.rules import Rules, DEFAULT_RULES

BATCH_AXES = ("data", "fsdp")


def unbox(tree):
    """Strip logical-axis boxes without applying sharding constraints (flax's unbox applies them
    whenever a mesh is active, which fails outside jit and on abstract shapes)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def logical_shardings(boxed_tree, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedShardings for a tree of `nn.Partitioned` leaves (e.g. abstract params from eval_shape).

    Leaves without logical names are replicated. A mesh axis is dropped from a dimension it does
    not divide (e.g. 4 KV heads over tensor=8), so every config works on every mesh.
    """
    specs = nn.get_partition_spec(boxed_tree)
    shapes = unbox(boxed_tree)

    def fit(spec, leaf):
        spec = nn.logical_to_mesh_axes(spec, rules) if spec is not None else P()
        dims = []
        for i, axes in enumerate(tuple(spec) + (None,) * (len(leaf.shape) - len(spec))):
            names = (axes,) if isinstance(axes, str) else tuple(axes or ())
            size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
            dims.append(axes if names and leaf.shape[i] % size == 0 else None)
        return NamedSharding(mesh, P(*dims))

    return jax.tree.map(fit, specs, shapes, is_leaf=lambda x: isinstance(x, P) or x is None)


def batch_multiple(batch_size: int, mesh: Mesh) -> int:
    """`batch_size` rounded up to a multiple of the batch axes' width (data x fsdp), so every
    batch splits evenly over them (samplers pad short batches with dummy rows anyway)."""
    width = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    return -(-batch_size // width) * width


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp; the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def shard_tree(tree, shardings):
    """Place host arrays (or re-shard device arrays) onto the given shardings."""
    return jax.tree.map(lambda x, s: jax.device_put(x, s), tree, shardings)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Make a global batch from this host's slice (multi-host) or from the whole batch (1 host).

    Each process passes only the rows it read; rows are laid out process-major over data x fsdp.
    """
    def put(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, x.ndim)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return {k: put(v) for k, v in batch.items()}


def to_global(x, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds in full -> one global array laid out by `sharding`.

    For inputs that all hosts compute identically (prompt batches, rollouts): on a pod a jitted
    function refuses plain numpy inputs with multi-host shardings; on one host this is device_put.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x) -> np.ndarray:
    """The full value of a (possibly multi-host sharded) array, on every host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs that carry target shardings: what orbax restores onto."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        unbox(abstract_tree), shardings)
