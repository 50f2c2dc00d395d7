"""A sampler setup from config -> `generate(prompts, seed, desc) -> iterator of raw texts`.

A setup names its model (preset or HF dir), its weights, its tokenizer and its sampling
parameters; the data jobs (queries, comparisons, self-play) see only text.
"""
from __future__ import annotations

from ml_collections import ConfigDict

from almost_jax.checkpoints.load import load_model_params
from almost_jax.config_lib import llama_config
from almost_jax.data.tokenizer import check_vocab, load_tokenizer
from almost_jax.models.llama import CausalLM
from almost_jax.sampling import Sampler, SamplingConfig


def build_sampler(setup: ConfigDict, sampling: ConfigDict | None = None) -> Sampler:
    model_cfg = llama_config(setup.model)
    tok = load_tokenizer(setup.tokenizer)
    check_vocab(tok, model_cfg.vocab_size, int(setup.get("allow_vocab_padding", 0)))
    params = load_model_params(setup.params, model_cfg)
    return Sampler(CausalLM(model_cfg), params, tok, SamplingConfig.from_config(sampling or setup.sampling),
                   batch_size=int(setup.get("batch_size", 32)), bucket=int(setup.get("bucket", 32)))


def load_generator(setup: ConfigDict):
    sampler = build_sampler(setup)

    def generate(prompts, seed: int = 0, desc: str | None = None):
        return (c.text for c in sampler.generate(prompts, seed=seed, desc=desc))

    return generate
