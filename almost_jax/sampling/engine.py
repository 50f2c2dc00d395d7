"""Prefill + KV-cache decoding as one jitted program.

The prompt batch (left-padded, mixed lengths) is prefilled in one pass into a preallocated cache
of prompt_len + max_new_tokens slots; a `lax.while_loop` then decodes one token per step and
exits as soon as every row has finished (EOS, a stop sequence, or the length limit). Shapes are
static per (batch, prompt_len, config), so a stream of batches of the same bucket compiles once.
With `n > 1` the prefilled cache is repeated n times along the batch, so prompts are read once.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from almost_jax.models.llama import CausalLM, init_cache, positions_from_mask
from almost_jax.sampling.processors import NEG_INF, SamplingConfig, sample_step

FINISH_LENGTH, FINISH_EOS, FINISH_STOP = 0, 1, 2
FINISH_NAMES = {FINISH_LENGTH: "length", FINISH_EOS: "eos", FINISH_STOP: "stop"}


def _ends_with(tokens: jax.Array, step: jax.Array, seq: tuple[int, ...]) -> jax.Array:
    """Whether tokens[:, :step+1] ends with `seq` (per row)."""
    n = len(seq)
    start = jnp.maximum(step + 1 - n, 0)
    window = jax.lax.dynamic_slice_in_dim(tokens, start, n, axis=1)
    return (step + 1 >= n) & jnp.all(window == jnp.asarray(seq, tokens.dtype), axis=1)


def generate_tokens(model: CausalLM, params, prompt_ids: jax.Array, prompt_mask: jax.Array, key: jax.Array,
                    cfg: SamplingConfig, eos_id: int, pad_id: int,
                    stop_sequences: tuple[tuple[int, ...], ...] = (), valid_vocab: int = 0) -> dict:
    """Returns tokens/logprobs [B*n, max_new_tokens], lengths [B*n], finish [B*n], steps (scalar).
    Rows are prompt-major: rows i*n .. i*n+n-1 are the samples of prompt i. `valid_vocab` > 0
    never samples ids at or past it (rows of a padded embedding the tokenizer cannot decode)."""
    mcfg = model.cfg
    if 0 < valid_vocab < mcfg.vocab_size:
        keep = jnp.arange(mcfg.vocab_size) < valid_vocab
        allowed = lambda logits: jnp.where(keep, logits, NEG_INF)  # noqa: E731
    else:
        allowed = lambda logits: logits  # noqa: E731
    b, p = prompt_ids.shape
    n_new = cfg.max_new_tokens
    total = p + n_new
    cache = init_cache(mcfg, b, total)
    kv_mask = jnp.zeros((b, total), jnp.int32).at[:, :p].set(prompt_mask.astype(jnp.int32))
    positions = positions_from_mask(prompt_mask)
    logits, cache = model.apply({"params": params}, prompt_ids, kv_mask, positions, cache, 0, last_only=True)
    last = logits[:, -1]
    next_pos = positions[:, -1] + 1

    if cfg.n > 1:  # share the prefill between the n samples of each prompt
        rep = functools.partial(jnp.repeat, repeats=cfg.n, axis=0)
        cache = jax.tree.map(rep, cache)
        kv_mask, last, next_pos = rep(kv_mask), rep(last), rep(next_pos)
    rows = b * cfg.n

    state = dict(
        step=jnp.zeros((), jnp.int32), cache=cache, kv_mask=kv_mask, last=last, pos=next_pos, key=key,
        tokens=jnp.full((rows, n_new), pad_id, jnp.int32), logprobs=jnp.zeros((rows, n_new), jnp.float32),
        done=jnp.zeros((rows,), bool), finish=jnp.full((rows,), FINISH_LENGTH, jnp.int32),
        lengths=jnp.zeros((rows,), jnp.int32))

    def cond(s):
        return (s["step"] < n_new) & ~jnp.all(s["done"])

    def body(s):
        key, sub = jax.random.split(s["key"])
        i = s["step"]
        token, logp = sample_step(sub, allowed(s["last"]), cfg)
        active = ~s["done"]
        token = jnp.where(active, token, pad_id).astype(jnp.int32)
        tokens = s["tokens"].at[:, i].set(token)
        logprobs = s["logprobs"].at[:, i].set(jnp.where(active, logp, 0.0))
        lengths = s["lengths"] + active.astype(jnp.int32)
        hit_eos = active & (token == eos_id)
        hit_stop = jnp.zeros_like(active)
        for seq in stop_sequences:
            hit_stop = hit_stop | (active & _ends_with(tokens, i, seq))
        finish = jnp.where(hit_eos, FINISH_EOS, jnp.where(hit_stop, FINISH_STOP, s["finish"]))
        done = s["done"] | hit_eos | hit_stop
        kv_mask = jax.lax.dynamic_update_slice_in_dim(s["kv_mask"], active.astype(jnp.int32)[:, None], p + i, axis=1)
        logits, cache = model.apply({"params": params}, token[:, None], kv_mask, s["pos"][:, None], s["cache"], p + i)
        return dict(step=i + 1, cache=cache, kv_mask=kv_mask, last=logits[:, -1], pos=s["pos"] + 1, key=key,
                    tokens=tokens, logprobs=logprobs, done=done, finish=finish, lengths=lengths)

    out = jax.lax.while_loop(cond, body, state)
    return {"tokens": out["tokens"], "logprobs": out["logprobs"], "lengths": out["lengths"],
            "finish": out["finish"], "steps": out["step"]}


def make_generate_fn(model: CausalLM, cfg: SamplingConfig, eos_id: int, pad_id: int,
                     stop_sequences: Sequence[Sequence[int]] = (), param_shardings=None, batch_sharding=None,
                     valid_vocab: int = 0):
    """jit(generate_tokens) for one sampling config; call as fn(params, prompt_ids, prompt_mask, key)."""
    # A stop sequence longer than max_new_tokens can never be completed (and cannot be sliced).
    stops = tuple(tuple(int(t) for t in s) for s in stop_sequences if 0 < len(s) <= cfg.max_new_tokens)

    def fn(params, prompt_ids, prompt_mask, key):
        return generate_tokens(model, params, prompt_ids, prompt_mask, key, cfg, eos_id, pad_id, stops, valid_vocab)

    if param_shardings is None:
        return jax.jit(fn)
    return jax.jit(fn, in_shardings=(param_shardings, batch_sharding, batch_sharding, None))
