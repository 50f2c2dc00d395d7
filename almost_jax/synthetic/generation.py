"""A sampler setup from config -> `generate(prompts, seed, desc) -> iterator of raw texts`.

A setup names its weights (`params`), its model (preset or HF dir) and tokenizer (both taken from
`params` when it is an HF dir, see checkpoints/source.py), its sampling parameters and, optionally, a `mesh` block (data/fsdp/tensor sizes): with one, the weights are loaded
straight into their shards (a 30B model never sits whole on one device) and every batch is
split over the data axes. The data jobs (queries, comparisons, self-play) see only text.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.checkpoints.source import resolve
from almost_jax.learners.reward import RewardScorer, load_reward_model
from almost_jax.models.llama import CausalLM, param_shardings
from almost_jax.parallel import DEFAULT_RULES, MeshConfig, make_mesh, rules_from_config
from almost_jax.sampling import Sampler, SamplingConfig


def build_sampler(setup: ConfigDict, sampling: ConfigDict | None = None) -> Sampler:
    src = resolve(setup, "params")
    model_cfg, tok = src.model, src.tokenizer
    mesh, rules, shardings = _placement(setup, model_cfg, "lm")
    params = load_model_params(src.params, model_cfg, shardings=shardings)
    return Sampler(CausalLM(model_cfg), params, tok, SamplingConfig.from_config(sampling or setup.sampling),
                   batch_size=int(setup.get("batch_size", 32)), bucket=int(setup.get("bucket", 32)), mesh=mesh,
                   rules=rules or DEFAULT_RULES)


def _placement(setup: ConfigDict, model_cfg=None, head: str = "lm"):
    """(mesh, rules, param shardings) from the setup's optional mesh block; all None without one
    (shardings None too when no model config is given)."""
    if not setup.get("mesh"):
        return None, None, None
    mesh, rules = make_mesh(MeshConfig.from_config(setup.mesh)), rules_from_config(setup.mesh.get("rules"))
    return mesh, rules, param_shardings(model_cfg, mesh, rules, head) if model_cfg is not None else None


def build_reward_scorer(setup: ConfigDict) -> RewardScorer:
    """The reward model of a setup block (`path`: the RM dir train_rm wrote, `batch_size`, optional
    mesh) under its scoring contract, loaded straight into its shards like `build_sampler`'s policy."""
    mesh, rules, _ = _placement(setup)
    return load_reward_model(setup.path, mesh, rules, int(setup.get("batch_size", 32)))


def load_generator(setup: ConfigDict):
    """generate(prompts, seed, desc) -> raw texts; `generate.truncations` counts the prompts cut to
    fit the model (for the job's manifest)."""
    sampler = build_sampler(setup)

    def generate(prompts, seed: int = 0, desc: str | None = None):
        return (c.text for c in sampler.generate(prompts, seed=seed, desc=desc))

    generate.truncations = sampler.truncations
    return generate
