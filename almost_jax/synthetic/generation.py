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
from almost_jax.learners.reward import RewardScorer, load_reward_model
from almost_jax.models.llama import CausalLM, param_shardings
from almost_jax.parallel import DEFAULT_RULES, MeshConfig, make_mesh, rules_from_config
from almost_jax.sampling import Sampler, SamplingConfig


def build_sampler(setup: ConfigDict, sampling: ConfigDict | None = None) -> Sampler:
    model_cfg = llama_config(setup.model)
    tok = load_tokenizer(setup.tokenizer)
    check_vocab(tok, model_cfg.vocab_size, int(setup.get("allow_vocab_padding", 0)))
    mesh, rules = _placement(setup)
    shardings = param_shardings(model_cfg, mesh, rules, "lm") if mesh is not None else None
    params = load_model_params(setup.params, model_cfg, shardings=shardings)
    return Sampler(CausalLM(model_cfg), params, tok, SamplingConfig.from_config(sampling or setup.sampling),
                   batch_size=int(setup.get("batch_size", 32)), bucket=int(setup.get("bucket", 32)), mesh=mesh,
                   rules=rules or DEFAULT_RULES)


def _placement(setup: ConfigDict):
    """(mesh, rules) from the setup's optional mesh block; (None, None) without one."""
    if not setup.get("mesh"):
        return None, None
    return make_mesh(MeshConfig.from_config(setup.mesh)), rules_from_config(setup.mesh.get("rules"))


def build_reward_scorer(setup: ConfigDict) -> RewardScorer:
    """The reward model of a setup block (`path`: the RM dir train_rm wrote, `batch_size`, optional
    mesh) under its scoring contract, loaded straight into its shards like `build_sampler`'s policy."""
    mesh, rules = _placement(setup)
    return load_reward_model(setup.path, mesh, rules, int(setup.get("batch_size", 32)))


def load_generator(setup: ConfigDict):
    sampler = build_sampler(setup)

    def generate(prompts, seed: int = 0, desc: str | None = None):
        return (c.text for c in sampler.generate(prompts, seed=seed, desc=desc))

    return generate
