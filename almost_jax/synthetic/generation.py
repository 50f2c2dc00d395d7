"""A sampler setup from config -> `generate(prompts, seed, desc) -> iterator of raw texts`.

A setup names its model (preset or HF dir), its weights, its tokenizer, its sampling parameters
and, optionally, a `mesh` block (data/fsdp/tensor sizes): with one, the weights are loaded
straight into their shards (a 30B model never sits whole on one device) and every batch is
split over the data axes. The data jobs (queries, comparisons, self-play) see only text.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.config_lib import llama_config
from almost_jax.data.tokenizer import check_vocab, load_tokenizer
from almost_jax.data.rm_data import DEFAULT_TEMPLATE
from almost_jax.learners.reward import RewardScorer
from almost_jax.models.llama import CausalLM, ScalarHeadModel, param_shardings
from almost_jax.parallel import DEFAULT_RULES, MeshConfig, make_mesh, rules_from_config
from almost_jax.sampling import Sampler, SamplingConfig


def build_sampler(setup: ConfigDict, sampling: ConfigDict | None = None) -> Sampler:
    model_cfg = llama_config(setup.model)
    tok = load_tokenizer(setup.tokenizer)
    check_vocab(tok, model_cfg.vocab_size, int(setup.get("allow_vocab_padding", 0)))
    mesh, rules, shardings = _placement(setup, model_cfg, "lm")
    params = load_model_params(setup.params, model_cfg, shardings=shardings)
    return Sampler(CausalLM(model_cfg), params, tok, SamplingConfig.from_config(sampling or setup.sampling),
                   batch_size=int(setup.get("batch_size", 32)), bucket=int(setup.get("bucket", 32)), mesh=mesh,
                   rules=rules or DEFAULT_RULES)


def _placement(setup: ConfigDict, model_cfg, head: str):
    """(mesh, rules, param shardings) from the setup's optional mesh block; all None without one."""
    if not setup.get("mesh"):
        return None, None, None
    mesh, rules = make_mesh(MeshConfig.from_config(setup.mesh)), rules_from_config(setup.mesh.get("rules"))
    return mesh, rules, param_shardings(model_cfg, mesh, rules, head)


def build_reward_scorer(setup: ConfigDict) -> RewardScorer:
    """A reward model from a setup block (model, params, tokenizer, max_len, batch_size, optional
    mesh), loaded straight into its shards like `build_sampler`'s policy."""
    model_cfg = llama_config(setup.model)
    tok = load_tokenizer(setup.tokenizer)
    check_vocab(tok, model_cfg.vocab_size, int(setup.get("allow_vocab_padding", 0)))
    mesh, rules, shardings = _placement(setup, model_cfg, "scalar")
    params = load_model_params(setup.params, model_cfg, head="scalar", shardings=shardings)
    if "score_head" not in params:
        raise ValueError(f"{setup.params} has no score_head: it is a language model, not a reward model")
    return RewardScorer(ScalarHeadModel(model_cfg), params, tok, int(setup.max_len), int(setup.get("batch_size", 32)),
                        setup.get("input_template", DEFAULT_TEMPLATE), mesh=mesh, rules=rules)


def load_generator(setup: ConfigDict):
    """`generate(prompts, seed, desc, ids, stream)` -> iterator of raw texts; prompt i samples with
    the key of (seed, stream, ids[i]) (sampling/keys.py), independent of batching."""
    sampler = build_sampler(setup)

    def generate(prompts, seed: int = 0, desc: str | None = None, ids=None, stream: str = ""):
        return (c.text for c in sampler.generate(prompts, seed=seed, desc=desc, ids=ids, stream=stream))

    return generate
