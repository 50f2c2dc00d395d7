"""Device mesh from config, and multi-host start-up."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from almost_jax.parallel.rules import Rules, DEFAULT_RULES

MESH_AXES = ("data", "fsdp", "tensor")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the (data, fsdp, tensor) axes; one of them may be -1 (= all remaining devices)."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    @classmethod
    def from_config(cls, cfg) -> "MeshConfig":
        return cls(data=int(cfg.data), fsdp=int(cfg.fsdp), tensor=int(cfg.tensor))

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        if sizes.count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got data={self.data} fsdp={self.fsdp} "
                             f"tensor={self.tensor}")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(f"mesh data={self.data} fsdp={self.fsdp} tensor={self.tensor}: the fixed axes "
                                 f"({known}) do not divide the {num_devices} devices")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh data*fsdp*tensor = {sizes[0]}*{sizes[1]}*{sizes[2]} = {math.prod(sizes)} but "
                f"{num_devices} devices are visible ({jax.process_count()} process(es)); set --config.mesh.* so "
                f"the product equals the device count, or use -1 for one axis. On a TPU pod, run the job on "
                f"every worker (--worker=all).")
        return tuple(sizes)


def make_mesh(mesh_cfg: MeshConfig | None = None, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = (mesh_cfg or MeshConfig()).resolve(len(devices))
    try:
        from jax.experimental import mesh_utils
        arr = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # fake CPU devices and odd topologies: plain row-major order
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Activate the mesh and the logical rules so activation constraints in the model apply."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def maybe_initialize_distributed(cfg=None) -> None:
    """Join the other hosts when the job is multi-host.

    On TPU pods and SLURM/GPU clusters JAX discovers the peers itself; a local multi-process test
    passes coordinator/num_processes/process_id explicitly (config `distributed.*` or env vars).
    """
    dist = getattr(cfg, "distributed", None) if cfg is not None else None
    # launch/tpu_run.sh exports ALMOST_JAX_DISTRIBUTED=1 on every worker of a pod slice.
    enabled = (bool(dist and dist.get("enabled", False)) or "JAX_COORDINATOR_ADDRESS" in os.environ
               or os.environ.get("ALMOST_JAX_DISTRIBUTED") == "1")
    if not enabled or jax.distributed.is_initialized():
        return
    # Explicit peers come from the config when it names a coordinator, else from the env vars, never
    # mixed: process_id=0 is a real value, and a config default must not mask JAX_PROCESS_ID.
    kwargs = {}
    if dist and dist.get("coordinator_address"):
        kwargs = dict(coordinator_address=dist.coordinator_address, num_processes=int(dist.num_processes),
                      process_id=int(dist.process_id))
    elif "JAX_COORDINATOR_ADDRESS" in os.environ:
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    # Not jax.default_backend(): it would start the backend, and initialize() must come first.
    if "cpu" in (jax.config.jax_platforms or "").split(","):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
