"""Mesh, logical-axis rules and sharding helpers: the one place that knows the device layout."""
from almost_jax.parallel.mesh import MeshConfig, make_mesh, mesh_context, maybe_initialize_distributed
from almost_jax.parallel.rules import DEFAULT_RULES, rules_from_config
from almost_jax.parallel.shard import (batch_sharding, logical_shardings, replicated, shard_batch,
                                       shard_tree, unbox)

__all__ = ["MeshConfig", "make_mesh", "mesh_context", "maybe_initialize_distributed", "DEFAULT_RULES",
           "rules_from_config", "batch_sharding", "logical_shardings", "replicated", "shard_batch", "shard_tree", "unbox"]
