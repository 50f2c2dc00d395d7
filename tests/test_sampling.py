"""Sampling engine: KV cache vs re-forward, greedy parity with transformers, sampling statistics,
stops, n samples, batching front, and sharded == unsharded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from almost_jax.models.config import get_config
from almost_jax.models.llama import CausalLM, init_cache, init_params, positions_from_mask
from almost_jax.sampling import Sampler, SamplingConfig, make_generate_fn, process_logits, sample_step
from almost_jax.sampling.batcher import cut_at_stop
from tests.hf_fixtures import hf_to_flax_inline, left_padded_batch, tiny_hf_llama
from tests.multidevice import run_with_devices


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny-gqa")
    return cfg, CausalLM(cfg), init_params(cfg, jax.random.key(0))


def test_kv_cache_logits_equal_full_reforward(tiny):
    cfg, model, params = tiny
    ids, mask = left_padded_batch(cfg.vocab_size, [9, 5, 2], seed=1)
    b, p = ids.shape
    steps = 6
    cache = init_cache(cfg, b, p + steps)
    apply = jax.jit(model.apply)  # one program per shape; op by op took ~1 min on 2 cores
    kv = np.zeros((b, p + steps), np.int32)
    kv[:, :p] = mask
    pos = np.asarray(positions_from_mask(jnp.asarray(mask)))
    logits, cache = apply({"params": params}, ids, kv, pos, cache, 0)
    seqs, masks = ids.copy(), mask.copy()
    next_pos = pos[:, -1] + 1
    for i in range(steps):
        full, _ = apply({"params": params}, seqs, masks)
        np.testing.assert_allclose(np.asarray(logits[:, -1]), np.asarray(full[:, -1]), atol=1e-4)
        tok = np.asarray(jnp.argmax(full[:, -1], -1)).astype(np.int64)
        kv[:, p + i] = 1
        logits, cache = apply({"params": params}, tok[:, None], kv, next_pos[:, None], cache, p + i)
        next_pos = next_pos + 1
        seqs = np.concatenate([seqs, tok[:, None]], 1)
        masks = np.concatenate([masks, np.ones((b, 1), np.int64)], 1)


@pytest.mark.parametrize("kind", ["mha", "gqa"])
def test_greedy_matches_transformers_generate(kind):
    import torch
    hf = tiny_hf_llama(kind, vocab=128, seed=3)
    cfg, params = hf_to_flax_inline(hf)
    ids, mask = left_padded_batch(128, [7, 3, 11, 1], seed=4)
    new = 12
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                          max_new_tokens=new, min_new_tokens=new, pad_token_id=0, eos_token_id=None)
    ref = ref[:, ids.shape[1]:].numpy()
    fn = make_generate_fn(CausalLM(cfg), SamplingConfig(temperature=0.0, max_new_tokens=new), eos_id=10**6, pad_id=0)
    out = fn(params, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(out["tokens"]), ref)
    assert int(out["steps"]) == new and set(np.asarray(out["finish"]).tolist()) == {0}


TOY = jnp.log(jnp.array([[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]]))


def _empirical(cfg: SamplingConfig, n: int = 20000, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), n)
    toks = jax.vmap(lambda k: sample_step(k, TOY, cfg)[0][0])(keys)
    return np.bincount(np.asarray(toks), minlength=TOY.shape[1])


def _expected(weights):
    w = np.asarray(weights, np.float64)
    return w / w.sum()


@pytest.mark.parametrize("cfg,expected", [
    (SamplingConfig(temperature=1.0), [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]),
    (SamplingConfig(temperature=0.5), np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]) ** 2),
    (SamplingConfig(top_k=2), [0.4, 0.25, 0, 0, 0, 0]),
    (SamplingConfig(top_p=0.7), [0.4, 0.25, 0.15, 0, 0, 0]),  # 0.4 + 0.25 < 0.7: the third is needed
    (SamplingConfig(top_p=0.65), [0.4, 0.25, 0, 0, 0, 0]),
    (SamplingConfig(min_p=0.3), [0.4, 0.25, 0.15, 0, 0, 0]),  # keep p >= 0.3 * 0.4 = 0.12
])
def test_sampling_frequencies_match_the_distribution(cfg, expected):
    counts = _empirical(cfg)
    p = _expected(expected)
    assert counts[p == 0].sum() == 0
    keep = p > 0
    _, pvalue = stats.chisquare(counts[keep], p[keep] * counts.sum())
    assert pvalue > 1e-3, (counts, p)


def _sorted_nucleus(logits: np.ndarray, p: float) -> np.ndarray:
    """The textbook nucleus by a full sort: keep a token while the mass strictly above it is < p."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, -1)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(sorted_logits), axis=-1))
    before = np.cumsum(probs, axis=-1) - probs
    threshold = np.where(before < p, sorted_logits, np.inf).min(-1, keepdims=True)
    return logits >= threshold


@pytest.mark.parametrize("scale,ties", [(0.1, True), (1.0, False), (5.0, True), (30.0, False)])
def test_top_p_without_a_sort_keeps_exactly_the_sorted_nucleus(scale, ties):
    """The bisection threshold equals the sort's on wide and flat rows, ties (with -0.0 == 0.0),
    masked (-1e30) tokens and p near 0 and 1."""
    rng = np.random.RandomState(int(scale * 10))
    logits = (rng.randn(16, 500) * scale).astype(np.float32)
    if ties:
        logits = np.round(logits)  # many exact ties, and -0.0 beside 0.0
    logits[:4, :200] = -1e30  # a top-k mask before the nucleus
    for p in (1e-6, 0.1, 0.5, 0.9, 0.999):
        kept = np.asarray(process_logits(jnp.asarray(logits), SamplingConfig(top_p=p))) > -1e29
        np.testing.assert_array_equal(kept, _sorted_nucleus(logits, p), err_msg=f"p={p}")


def test_same_key_same_output_and_greedy():
    cfg = SamplingConfig(temperature=1.0)
    a = sample_step(jax.random.key(7), jnp.tile(TOY, (64, 1)), cfg)[0]
    b = sample_step(jax.random.key(7), jnp.tile(TOY, (64, 1)), cfg)[0]
    c = sample_step(jax.random.key(8), jnp.tile(TOY, (64, 1)), cfg)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    tok, lp = sample_step(jax.random.key(0), TOY, SamplingConfig(temperature=0.0))
    assert int(tok[0]) == 0 and np.isclose(float(lp[0]), np.log(0.4), atol=1e-5)
    # logprobs are under softmax(logits / T), not under the truncated distribution
    tok, lp = sample_step(jax.random.key(0), TOY, SamplingConfig(temperature=2.0, top_k=1))
    assert int(tok[0]) == 0
    assert np.isclose(float(lp[0]), float(jax.nn.log_softmax(TOY / 2.0)[0, 0]), atol=1e-5)
    assert np.all(np.asarray(process_logits(TOY, SamplingConfig(top_k=1)))[0, 1:] < -1e29)


class ToyTok:
    """Character-free toy tokenizer: ids are their own text (space-separated)."""
    bos_id, eos_id, pad_id, vocab_size = 1, 2, 0, 256

    def encode(self, text, add_bos=False, add_eos=False):
        ids = [int(t) for t in text.split()] if text.strip() else []
        return ([1] if add_bos else []) + ids + ([2] if add_eos else [])

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def test_stops_eos_and_early_exit(tiny):
    cfg, model, params = tiny
    ids, mask = left_padded_batch(cfg.vocab_size, [4, 6], seed=2)
    greedy = make_generate_fn(model, SamplingConfig(temperature=0.0, max_new_tokens=10), eos_id=10**6, pad_id=0)
    ref = np.asarray(greedy(params, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(0))["tokens"])
    # Row 0's 3rd token as EOS: row 0 stops at step 3 with finish "eos".
    eos = int(ref[0, 2])
    out = make_generate_fn(model, SamplingConfig(temperature=0.0, max_new_tokens=10), eos_id=eos, pad_id=0)(
        params, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(0))
    assert int(out["lengths"][0]) == 3 and int(out["finish"][0]) == 1
    assert np.all(np.asarray(out["tokens"])[0, 3:] == 0)
    # A token-sequence stop (row 1's tokens 2-3) ends row 1 there with finish "stop".
    stop = (int(ref[1, 1]), int(ref[1, 2]))
    out = make_generate_fn(model, SamplingConfig(temperature=0.0, max_new_tokens=10), eos_id=10**6, pad_id=0,
                           stop_sequences=[stop])(params, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(0))
    assert int(out["lengths"][1]) <= 3 and int(out["finish"][1]) == 2
    # Early exit: single-token stops that each row emits by step 2 end the loop at step <= 2.
    both = make_generate_fn(model, SamplingConfig(temperature=0.0, max_new_tokens=10), eos_id=10**6, pad_id=0,
                            stop_sequences=[(int(ref[0, 1]),), (int(ref[1, 1]),)])(
        params, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(0))
    assert int(both["steps"]) == max(int(x) for x in both["lengths"]) <= 2
    assert cut_at_stop("1 2\n\nHuman: x", ["\n\nHuman:"]) == ("1 2", True)


def test_n_samples_share_prefill_and_differ(tiny):
    cfg, model, params = tiny
    ids, mask = left_padded_batch(cfg.vocab_size, [5, 3], seed=5)
    out = make_generate_fn(model, SamplingConfig(temperature=1.0, max_new_tokens=8, n=3), eos_id=10**6, pad_id=0)(
        params, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(1))
    toks = np.asarray(out["tokens"])
    assert toks.shape == (6, 8)
    assert len({tuple(r) for r in toks[:3]}) > 1  # samples of prompt 0 differ
    greedy = make_generate_fn(model, SamplingConfig(temperature=0.0, max_new_tokens=8, n=2), eos_id=10**6, pad_id=0)(
        params, ids.astype(np.int32), mask.astype(np.int32), jax.random.key(1))
    g = np.asarray(greedy["tokens"])
    np.testing.assert_array_equal(g[0], g[1])  # n copies of a greedy decode are identical


def test_batcher_returns_in_order_and_compiles_once_per_bucket(tiny):
    cfg, model, params = tiny
    rs = np.random.RandomState(0)
    prompts = [" ".join(str(t) for t in rs.randint(5, 200, rs.randint(1, 30))) for _ in range(11)]
    sampler = Sampler(model, params, ToyTok(), SamplingConfig(temperature=0.0, max_new_tokens=5, n=2),
                      batch_size=4, bucket=16)
    got = list(sampler.generate(prompts, progress=False))
    assert [(c.prompt_index, c.sample_index) for c in got] == [(i, k) for i in range(11) for k in range(2)]
    # Each prompt alone gives the same greedy completion as inside the sorted, padded batches.
    for i in (0, 5, 10):
        alone = list(Sampler(model, params, ToyTok(), SamplingConfig(temperature=0.0, max_new_tokens=5),
                             batch_size=1, bucket=16).generate([prompts[i]], progress=False))[0]
        assert alone.token_ids == got[2 * i].token_ids
    buckets = {-(-len(ToyTok().encode(p, add_bos=True)) // 16) * 16 for p in prompts}
    assert sampler._fn._cache_size() <= len(buckets)


def test_samples_depend_on_prompt_ids_not_on_batches(tiny):
    """A prompt's samples come from the key of (seed, stream, its id): the same when it is asked
    again among other prompts, in another order or batch size (a resumed job), different under
    another stream (another setup) or seed, and its n samples differ from each other."""
    cfg, model, params = tiny
    rs = np.random.RandomState(1)
    prompts = [" ".join(str(t) for t in rs.randint(5, 200, rs.randint(1, 30))) for _ in range(9)]
    ids = [f"q{i}" for i in range(9)]
    sc = SamplingConfig(temperature=1.0, top_k=100, max_new_tokens=6, n=2)
    sampler = Sampler(model, params, ToyTok(), sc, batch_size=4, bucket=16)
    tokens = lambda out: [c.token_ids for c in out]  # noqa: E731
    full = tokens(sampler.generate(prompts, ids=ids, stream="A", progress=False))
    buckets = {-(-len(ToyTok().encode(p, add_bos=True)) // 16) * 16 for p in prompts}
    assert sampler._fn._cache_size() <= len(buckets)  # per-row keys add no compiles
    rest = Sampler(model, params, ToyTok(), sc, batch_size=3, bucket=8).generate(
        prompts[4:][::-1], ids=ids[4:][::-1], stream="A", progress=False)
    assert tokens(rest) == [t for i in range(8, 3, -1) for t in full[2 * i:2 * i + 2]]
    compiled = sampler._fn._cache_size()  # the rebuilt sampler above shares the compiled programs
    other = tokens(sampler.generate(prompts, ids=ids, stream="B", progress=False))
    reseeded = tokens(sampler.generate(prompts, ids=ids, seed=1, stream="A", progress=False))
    assert sampler._fn._cache_size() == compiled  # new keys, no new programs
    assert sum(a == b for a, b in zip(full, other)) <= 2 and sum(a == b for a, b in zip(full, reseeded)) <= 2
    assert sum(full[2 * i] == full[2 * i + 1] for i in range(9)) <= 1


SHARDED = """
import numpy as np, jax
from almost_jax.models.config import get_config
from almost_jax.models.llama import CausalLM, abstract_or_init, init_params, stack_layers
from almost_jax.parallel import MeshConfig, make_mesh, mesh_context, logical_shardings, batch_sharding
from almost_jax.sampling import SamplingConfig, make_generate_fn
cfg = get_config("tiny-gqa")
params = init_params(cfg, jax.random.key(0))
rs = np.random.RandomState(0)
ids = rs.randint(3, 256, (8, 12)).astype(np.int32); mask = np.ones_like(ids); mask[1, :5] = 0; mask[5, :9] = 0
sc = SamplingConfig(temperature=0.0, max_new_tokens=10)
ref = np.asarray(make_generate_fn(CausalLM(cfg), sc, 10**6, 0)(params, ids, mask, jax.random.key(0))["tokens"])
for shape in [(8, 1, 1), (2, 2, 2)]:
    mesh = make_mesh(MeshConfig(*shape))
    psh = logical_shardings(abstract_or_init(cfg, jax.random.key(0)), mesh)
    with mesh_context(mesh):
        fn = make_generate_fn(CausalLM(cfg), sc, 10**6, 0, param_shardings=psh, batch_sharding=batch_sharding(mesh))
        out = np.asarray(fn(jax.device_put(params, psh), ids, mask, jax.random.key(0))["tokens"])
    assert (out == ref).all(), (shape, out, ref)
    print("OK", shape)
scfg = cfg.replace(scan_layers=True)  # stacked params, their 'layers' axis unsharded, and a stacked cache
mesh = make_mesh(MeshConfig(2, 2, 2))
psh = logical_shardings(abstract_or_init(scfg, jax.random.key(0)), mesh)
with mesh_context(mesh):
    fn = make_generate_fn(CausalLM(scfg), sc, 10**6, 0, param_shardings=psh, batch_sharding=batch_sharding(mesh))
    out = np.asarray(fn(jax.device_put(stack_layers(params), psh), ids, mask, jax.random.key(0))["tokens"])
assert (out == ref).all(), ("scan", out, ref)
print("OK scan")
"""


def test_sharded_greedy_equals_unsharded():
    out = run_with_devices(8, SHARDED)
    assert "OK (8, 1, 1)" in out and "OK (2, 2, 2)" in out and "OK scan" in out


def test_padded_vocab_rows_are_never_sampled(tiny):
    """A model whose embedding is larger than its tokenizer never emits undecodable ids."""
    cfg, model, params = tiny
    ids, mask = left_padded_batch(cfg.vocab_size, [6, 3, 5, 6], seed=3)
    fn = make_generate_fn(model, SamplingConfig(temperature=2.0, max_new_tokens=24), 10**6, 0, valid_vocab=40)
    out = np.asarray(fn(params, ids, mask, jax.random.key(0))["tokens"])
    assert out.max() < 40
    free = np.asarray(make_generate_fn(model, SamplingConfig(temperature=2.0, max_new_tokens=24), 10**6, 0)(
        params, ids, mask, jax.random.key(0))["tokens"])
    assert free.max() >= 40  # without the limit, T=2 sampling does reach the padded rows


ON_MESH = """
import numpy as np, jax
from almost_jax.data.tokenizer import Tokenizer
from almost_jax.data.rm_data import RewardContract
from almost_jax.learners.reward import RewardScorer
from almost_jax.models.config import get_config
from almost_jax.models.llama import CausalLM, ScalarHeadModel, init_params
from almost_jax.parallel import MeshConfig, make_mesh
from almost_jax.sampling import Sampler, SamplingConfig

class Chars(Tokenizer):  # ids 3.. are characters; 0 pad, 1 bos, 2 eos
    vocab_size, bos_id, eos_id, pad_id = 256, 1, 2, 0
    def _encode(self, text): return [3 + (ord(c) % 250) for c in text]
    def decode(self, ids): return "".join(chr(i - 3 + 32) for i in ids if i >= 3)

cfg = get_config("tiny-gqa")
lm, rm = init_params(cfg, jax.random.key(0)), init_params(cfg, jax.random.key(1), "scalar")
prompts = ["hello there", "a", "the quick brown fox", "xyz", "mesh", "", "pod of eight", "q"]
sc = SamplingConfig(temperature=0.0, max_new_tokens=8, n=2)
ref = [c.text for c in Sampler(CausalLM(cfg), lm, Chars(), sc, batch_size=4).generate(prompts, progress=False)]
ref_scores = RewardScorer(ScalarHeadModel(cfg), rm, Chars(), RewardContract(max_len=32), 4).raw_scores(prompts, prompts[::-1])
for shape in [(8, 1, 1), (2, 2, 2), (1, 4, 2)]:
    mesh = make_mesh(MeshConfig(*shape))
    s = Sampler(CausalLM(cfg), lm, Chars(), sc, batch_size=4, mesh=mesh)
    assert s.batch_size % (shape[0] * shape[1]) == 0
    out = [c.text for c in s.generate(prompts, progress=False)]
    assert out == ref, (shape, out, ref)
    scores = RewardScorer(ScalarHeadModel(cfg), rm, Chars(), RewardContract(max_len=32), 4, mesh=mesh).raw_scores(prompts, prompts[::-1])
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    print("OK", shape)
"""


def test_sampler_and_reward_scorer_on_a_mesh_match_one_device():
    out = run_with_devices(8, ON_MESH)
    assert "OK (8, 1, 1)" in out and "OK (2, 2, 2)" in out and "OK (1, 4, 2)" in out
