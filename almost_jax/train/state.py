"""Train state (params, optimizer state, step, PRNG key, learner extras) and its shardings on the mesh."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax
from jax.sharding import Mesh

from almost_jax.parallel.rules import DEFAULT_RULES, Rules
from almost_jax.parallel.shard import logical_shardings, unbox


@flax.struct.dataclass
class TrainState:
    """`step` counts optimizer updates. `extra` holds a learner's small state beside the params
    (e.g. RL's adaptive KL coefficient), checkpointed with them; {} for most learners."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    extra: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, rng: jax.Array, extra: Any = None) -> "TrainState":
        extra = jax.tree.map(lambda v: jax.numpy.asarray(v, jax.numpy.float32), dict(extra or {}))
        return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=tx.init(params),
                   rng=rng, extra=extra, tx=tx)


def abstract_state(boxed_abstract_params, tx, extra: Any = None) -> TrainState:
    """Shapes of the whole state, with the params' logical-axis boxes carried into the optimizer
    state (optax maps over params, so Adam moments inherit the params' annotations)."""
    return jax.eval_shape(lambda p: TrainState.create(p, tx, jax.random.key_data(jax.random.key(0)), extra),
                          boxed_abstract_params)


def state_shardings(boxed_abstract_params, tx, mesh: Mesh, rules: Rules = DEFAULT_RULES, extra: Any = None):
    return logical_shardings(abstract_state(boxed_abstract_params, tx, extra), mesh, rules)


def create_sharded_state(init: Any, tx, shardings: TrainState, seed: int, extra: Any = None) -> TrainState:
    """Build the state directly in its sharded layout.

    `init` is either a function returning freshly initialised params (traced under jit, so the
    params never exist unsharded on one device) or a tree of already-loaded params (placed onto
    their shardings first, then passed in as arguments, never baked into the program).
    """
    rng = jax.random.key_data(jax.random.key(seed))
    if callable(init):
        return jax.jit(lambda: TrainState.create(unbox(init()), tx, rng, extra), out_shardings=shardings)()
    params = jax.device_put(unbox(init), shardings.params)
    return jax.jit(lambda p: TrainState.create(p, tx, rng, extra), in_shardings=(shardings.params,),
                   out_shardings=shardings)(params)
