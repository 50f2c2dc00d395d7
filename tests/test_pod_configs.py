"""Paper-scale configs build, and their shardings are checked abstractly (no weights) on 8 devices:
every large tensor is split over the mesh and what one chip holds fits a TPU v4 chip (32 GiB)."""
import json

from tests.multidevice import run_with_devices

CODE = """
import json, jax, numpy as np
from almost_jax.config_lib import load_config_file, llama_config
from almost_jax.models.llama import abstract_or_init
from almost_jax.parallel import MeshConfig, logical_shardings, make_mesh, rules_from_config
from almost_jax.parallel.shard import unbox
from almost_jax.train.optim import make_optimizer
from almost_jax.train.state import abstract_state

def per_device(boxed, mesh_block):
    mesh = make_mesh(MeshConfig.from_config(mesh_block))
    shardings = logical_shardings(boxed, mesh, rules_from_config(mesh_block.get("rules")))
    total, unsharded_big = 0, []
    for (kp, s), sh in zip(jax.tree_util.tree_leaves_with_path(unbox(boxed)), jax.tree.leaves(shardings)):
        shard = sh.shard_shape(s.shape)
        total += int(np.prod(shard)) * s.dtype.itemsize
        if np.prod(s.shape) > 1_000_000 and tuple(shard) == tuple(s.shape):
            unsharded_big.append(jax.tree_util.keystr(kp))
    return {"gb": total / 2**30, "unsharded_big": unsharded_big, "mesh": dict(mesh.shape)}

def train_state(model_block, opt, mesh_block, head):
    boxed = abstract_or_init(llama_config(model_block), jax.random.key(0), head)
    return per_device(abstract_state(boxed, make_optimizer(opt, 1000)[0]), mesh_block)

def sampler(setup, pod_chips=16, prompt_len=1024):
    '''Weights on this 8-device mesh; the KV cache of one batch as the pod (v4-32: 16 chips) splits it.'''
    cfg = llama_config(setup.model)
    r = per_device(abstract_or_init(cfg, jax.random.key(0), "lm"), setup.mesh)
    tensor = setup.mesh.tensor
    rows = setup.batch_size / (pod_chips // tensor)
    tokens = prompt_len + setup.sampling.max_new_tokens
    r["cache_gb"] = rows * tokens * cfg.num_layers * 2 * cfg.kv_heads * cfg.dim_per_head * 2 / tensor / 2**30
    r["params"] = cfg.num_params()
    return r

report = {}
for name, head in [("reward_llama1_7b", "scalar"), ("sft_llama1_7b", "lm")]:
    cfg = load_config_file(f"configs/pod/{name}.py")
    report[name] = train_state(cfg.model, cfg.optimizer, cfg.mesh, head)
    report[name]["params"] = llama_config(cfg.model).num_params()

from almost_jax.jobs.rl import trained_params
from almost_jax.learners.rl import algorithm
rm_cfg = llama_config(load_config_file("configs/pod/reward_llama1_7b.py").model)  # what the RM's contract records
for name in ("ppo", "rloo", "grpo"):
    job = load_config_file(f"configs/pod/{name}_llama1_7b.py")
    policy_cfg = llama_config(job.policy_model)
    trained = trained_params(policy_cfg, rm_cfg if algorithm(job.rl).value_model else None)
    state = per_device(abstract_state(trained, make_optimizer(job.optimizer, 1000)[0]), job.mesh)
    frozen = per_device({"reference": abstract_or_init(policy_cfg, jax.random.key(0), "lm"),
                         "rm": abstract_or_init(rm_cfg, jax.random.key(0), "scalar")}, job.mesh)
    report[name] = {"state_gb": state["gb"], "frozen_gb": frozen["gb"], "unsharded_big": state["unsharded_big"],
                    "trained": sorted(trained), "rl": job.rl.to_dict(), "lr": job.optimizer.lr, "workdir": job.workdir}

comp = load_config_file("configs/pod/comparisons_llama1.py")
report["comparisons"] = {"rubric": list(comp.rubric), "setups": {n: sampler(s) for n, s in comp.setups.items()}}
rmsp = load_config_file("configs/pod/rmsp_llama1.py")
report["rmsp"] = {"assistant": sampler(rmsp.assistant), "user": sampler(rmsp.user),
                  "rm": per_device(abstract_or_init(rm_cfg, jax.random.key(0), "scalar"), rmsp.rm.mesh),
                  "n": rmsp.selfplay.n_candidates}
queries = load_config_file("configs/pod/queries_llama1.py")
report["queries"] = {"generator": sampler(queries.generator), "n_shots": queries.n_shots,
                     "temperature": queries.generator.sampling.temperature}
print("REPORT" + json.dumps(report))
"""

HBM_GB = 32  # one TPU v4 chip


def test_pod_configs_shard_abstractly():
    report = json.loads(run_with_devices(8, CODE).split("REPORT", 1)[1])
    for name in ("reward_llama1_7b", "sft_llama1_7b"):
        r = report[name]
        assert 6.5e9 < r["params"] < 7.0e9, r
        assert r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
        assert r["unsharded_big"] == [], r["unsharded_big"]  # every large tensor is split over the mesh
        # fp32 params + Adam moments of 6.7B params = ~75 GiB, split 8 ways
        assert 8 < r["gb"] < 11, r

    ppo, rloo, grpo = report["ppo"], report["rloo"], report["grpo"]
    for r in (ppo, rloo, grpo):
        assert r["unsharded_big"] == [] and r["lr"] == 1e-5 and r["rl"]["rollout_batch_size"] == 512
    # policy + value with Adam moments (2 x 6.7B x 12 bytes / 8 chips), plus the frozen reference and RM (fp32)
    assert 17 < ppo["state_gb"] < 21 and ppo["state_gb"] + ppo["frozen_gb"] < HBM_GB, ppo
    assert ppo["trained"] == ["policy", "value"] and (ppo["rl"]["algorithm"], ppo["rl"]["kl_coef"]) == ("ppo", 0.0067)
    for r in (rloo, grpo):  # no value model: half PPO's trained state
        assert r["trained"] == ["policy"] and 8 < r["state_gb"] < 11, r
        assert r["workdir"].endswith(f"/{r['rl']['algorithm']}_7b")
    assert (rloo["rl"]["samples_per_prompt"], rloo["rl"]["kl_estimator"], rloo["rl"]["ppo_epochs"]) == (4, "kl", 1)
    assert (grpo["rl"]["samples_per_prompt"], grpo["rl"]["kl_coef"], grpo["rl"]["kl_estimator"]) == (8, 0.04, "k3")

    setups = report["comparisons"]["setups"]
    assert set(report["comparisons"]["rubric"]) == set(setups)
    sizes = {n: s["params"] for n, s in setups.items()}
    assert sizes["llama30b_faithful_3shot"] > sizes["llama13b_hhh_3shot"] > sizes["llama7b_hhh_3shot"]
    samplers = list(setups.values()) + [report["rmsp"]["assistant"], report["rmsp"]["user"],
                                        report["queries"]["generator"]]
    for s in samplers:
        assert s["mesh"] == {"data": 2, "fsdp": 1, "tensor": 4}, s
        assert s["unsharded_big"] == [], s["unsharded_big"]
        assert s["gb"] + s["cache_gb"] < HBM_GB, s  # 30B: ~15 GiB of bf16 weights + the KV cache per chip
    assert 14 < setups["llama30b_faithful_3shot"]["gb"] < 16
    assert report["rmsp"]["rm"]["unsharded_big"] == [] and report["rmsp"]["n"] == 4
    assert report["queries"]["n_shots"] == 10 and report["queries"]["temperature"] == 1.2
