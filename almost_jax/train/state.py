"""Train state (params, optimizer state, step, PRNG key) and its shardings on the mesh."""
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
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, rng: jax.Array) -> "TrainState":
        return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=tx.init(params),
                   rng=rng, tx=tx)


def abstract_state(boxed_abstract_params, tx) -> TrainState:
    """Shapes of the whole state, with the params' logical-axis boxes carried into the optimizer
    state (optax maps over params, so Adam moments inherit the params' annotations)."""
    return jax.eval_shape(lambda p: TrainState.create(p, tx, jax.random.key_data(jax.random.key(0))),
                          boxed_abstract_params)


def state_shardings(boxed_abstract_params, tx, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    return logical_shardings(abstract_state(boxed_abstract_params, tx), mesh, rules)


def create_sharded_state(init: Any, tx, shardings: TrainState, seed: int) -> TrainState:
    """Build the state directly in its sharded layout.

    `init` is either a function returning freshly initialised params (traced under jit, so the
    params never exist unsharded on one device) or a tree of already-loaded params (placed onto
    their shardings first, then passed in as arguments, never baked into the program).
    """
    rng = jax.random.key_data(jax.random.key(seed))
    if callable(init):
        return jax.jit(lambda: TrainState.create(unbox(init()), tx, rng), out_shardings=shardings)()
    params = jax.device_put(unbox(init), shardings.params)
    return jax.jit(lambda p: TrainState.create(p, tx, rng), in_shardings=(shardings.params,),
                   out_shardings=shardings)(params)
