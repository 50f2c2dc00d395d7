"""Same loss and gradients on 1 device and on 8 fake devices under several mesh shapes."""
import numpy as np
import pytest

from tests.multidevice import run_with_devices

SHAPES_8 = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]

WORKER = """
import numpy as np, jax
from almost_jax.models.config import get_config
from almost_jax.models.llama import CausalLM, abstract_or_init, init_params
from almost_jax.parallel import MeshConfig, make_mesh, mesh_context, logical_shardings, shard_batch
from almost_jax.learners.lm import make_lm_loss

cfg = get_config("tiny-gqa")
host_params = init_params(cfg, jax.random.key(0))
rs = np.random.RandomState(0)
ids = rs.randint(3, cfg.vocab_size, size=(8, 24)).astype(np.int32)
mask = np.ones_like(ids); mask[1, :5] = 0; mask[6, :11] = 0
loss_fn = make_lm_loss(CausalLM(cfg))
for shape in {shapes}:
    mesh = make_mesh(MeshConfig(*shape))
    params = jax.device_put(host_params, logical_shardings(abstract_or_init(cfg, jax.random.key(0)), mesh))
    batch = shard_batch({{"input_ids": ids, "attention_mask": mask, "loss_mask": mask}}, mesh)
    with mesh_context(mesh):
        (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, None)
    q = grads["model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    print("SPEC", shape, q.sharding.spec)
    flat = {{jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(grads)}}
    np.savez("{out}/%d_%d_%d.npz" % shape, loss=np.asarray(loss), **flat)
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("grads")
    run_with_devices(1, WORKER.format(shapes=[(1, 1, 1)], out=out))
    stdout = run_with_devices(8, WORKER.format(shapes=SHAPES_8, out=out))
    return out, stdout


@pytest.mark.parametrize("shape", SHAPES_8)
def test_loss_and_grads_match_single_device(results, shape):
    out, stdout = results
    ref = np.load(out / "1_1_1.npz")
    got = np.load(out / ("%d_%d_%d.npz" % shape))
    spec_line = next(line for line in stdout.splitlines() if line.startswith(f"SPEC {shape}"))
    if shape[2] > 1:
        assert "tensor" in spec_line, spec_line  # tensor parallelism really applied to q_proj
    assert set(ref.files) == set(got.files)
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-6, atol=1e-6)
    for name in ref.files:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_mesh_product_mismatch_is_a_clear_error():
    from almost_jax.parallel import MeshConfig
    with pytest.raises(ValueError, match=r"mesh data\*fsdp\*tensor = 2\*2\*1 = 4 but 8 devices"):
        MeshConfig(2, 2, 1).resolve(8)
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        MeshConfig(-1, -1, 1).resolve(8)
    assert MeshConfig(2, -1, 2).resolve(8) == (2, 2, 2)
