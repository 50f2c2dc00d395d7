"""Batched KV-cache generation: processors, the jitted decode loop, and a length-bucketed front."""
from almost_jax.sampling.batcher import Completion, Sampler
from almost_jax.sampling.engine import generate_tokens, make_generate_fn
from almost_jax.sampling.processors import SamplingConfig, process_logits, sample_step

__all__ = ["Completion", "Sampler", "SamplingConfig", "generate_tokens", "make_generate_fn", "process_logits",
           "sample_step"]
