"""Paper-scale configs build, and their shardings are checked abstractly (no weights) on 8 devices."""
import json

from tests.multidevice import run_with_devices

CODE = """
import json, jax, numpy as np
from almost_jax.config_lib import load_config_file, llama_config
from almost_jax.models.llama import abstract_or_init
from almost_jax.parallel import MeshConfig, make_mesh, rules_from_config
from almost_jax.parallel.shard import unbox
from almost_jax.train.optim import make_optimizer
from almost_jax.train.state import abstract_state, state_shardings

report = {}
for path, head_key in [("configs/pod/reward_llama1_7b.py", "scalar"), ("configs/pod/sft_llama1_7b.py", "lm")]:
    cfg = load_config_file(path)
    model_cfg = llama_config(cfg.model)
    mesh = make_mesh(MeshConfig.from_config(cfg.mesh))
    boxed = abstract_or_init(model_cfg, jax.random.key(0), head_key)
    tx, _ = make_optimizer(cfg.optimizer, 1000)
    shardings = state_shardings(boxed, tx, mesh, rules_from_config(cfg.mesh.rules))
    shapes = unbox(abstract_state(boxed, tx))
    per_device, unsharded_big = 0, []
    for (kp, s), sh in zip(jax.tree_util.tree_leaves_with_path(shapes), jax.tree.leaves(shardings)):
        nbytes = int(np.prod(s.shape)) * s.dtype.itemsize
        shard = sh.shard_shape(s.shape)
        per_device += int(np.prod(shard)) * s.dtype.itemsize
        if np.prod(s.shape) > 1_000_000 and tuple(shard) == tuple(s.shape):
            unsharded_big.append(jax.tree_util.keystr(kp))
    report[path] = {"params": model_cfg.num_params(), "per_device_gb": per_device / 2**30,
                    "unsharded_big": unsharded_big, "mesh": dict(mesh.shape)}
from almost_jax.config_lib import load_config_file as L
ppo = L("configs/pod/ppo_llama1_7b.py"); comp = L("configs/pod/comparisons_llama1.py")
report["ppo"] = {"rollout": ppo.ppo.rollout_batch_size, "kl": ppo.ppo.kl_coef, "lr": ppo.optimizer.lr}
report["comparisons"] = {"rubric": list(comp.rubric), "setups": sorted(comp.setups.keys())}
print("REPORT" + json.dumps(report))
"""


def test_pod_configs_shard_abstractly():
    out = run_with_devices(8, CODE)
    report = json.loads(out.split("REPORT", 1)[1])
    for path in ("configs/pod/reward_llama1_7b.py", "configs/pod/sft_llama1_7b.py"):
        r = report[path]
        assert 6.5e9 < r["params"] < 7.0e9, r
        assert r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
        assert r["unsharded_big"] == [], r["unsharded_big"]  # every large tensor is split over the mesh
        # fp32 params + Adam moments of 6.7B params = ~75 GiB, split 8 ways
        assert 8 < r["per_device_gb"] < 11, r
    assert report["ppo"] == {"rollout": 512, "kl": 0.0067, "lr": 1e-5}
    assert set(report["comparisons"]["rubric"]) == set(report["comparisons"]["setups"])
