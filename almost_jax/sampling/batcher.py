"""Many prompts of varied lengths through a few fixed shapes, results streamed back in order.

Prompts are sorted by length, cut into batches of `batch_size` (the last padded with dummy
rows) and left-padded to a multiple of `bucket` tokens, so a whole job compiles one program per
length bucket. Stop strings are applied to the decoded text (the token-level check inside the
loop only ends decoding early).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from almost_jax.models.llama import CausalLM
from almost_jax.sampling.engine import FINISH_NAMES, make_generate_fn
from almost_jax.sampling.processors import SamplingConfig


@dataclasses.dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "eos" | "stop" | "length"
    prompt_index: int
    sample_index: int


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def left_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        if s:
            ids[i, -len(s):] = s
            mask[i, -len(s):] = 1
    return ids, mask


class Sampler:
    """Text in, completions out, for one model and one sampling config."""

    def __init__(self, model: CausalLM, params, tokenizer, cfg: SamplingConfig, batch_size: int = 32,
                 bucket: int = 32, max_prompt_len: Optional[int] = None, add_bos: bool = True,
                 param_shardings=None, batch_sharding=None):
        self.model, self.params, self.tok, self.cfg = model, params, tokenizer, cfg
        self.batch_size, self.bucket, self.add_bos = batch_size, bucket, add_bos
        limit = model.cfg.max_position_embeddings - cfg.max_new_tokens
        self.max_prompt_len = min(max_prompt_len or limit, limit)
        stop_seqs = [tokenizer.encode(s) for s in cfg.stop_strings]
        self._fn = make_generate_fn(model, cfg, tokenizer.eos_id, tokenizer.pad_id, stop_seqs,
                                    param_shardings, batch_sharding)

    def encode(self, prompt: str) -> list[int]:
        ids = self.tok.encode(prompt, add_bos=self.add_bos)
        return ids[-self.max_prompt_len:]

    def generate(self, prompts: Sequence[str], seed: int = 0, desc: Optional[str] = None,
                 progress: bool = True, params=None) -> Iterator[Completion]:
        """Yields completions in prompt order (n per prompt when cfg.n > 1); `params` overrides the
        sampler's own (a policy that changes between calls, same shapes: no recompile)."""
        params = self.params if params is None else params
        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        ready: dict[int, list[Completion]] = {}
        next_out = 0
        key = jax.random.key(seed)
        bar = tqdm(total=len(prompts), desc=desc or "sampling", disable=not progress, dynamic_ncols=True, leave=False)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start:start + self.batch_size]
            seqs = [encoded[i] for i in idx] + [[self.tok.bos_id]] * (self.batch_size - len(idx))
            length = -(-max(map(len, seqs)) // self.bucket) * self.bucket
            ids, mask = left_pad(seqs, length, self.tok.pad_id)
            out = jax.device_get(self._fn(params, ids, mask, jax.random.fold_in(key, b)))
            for row, prompt_index in enumerate(idx):
                ready[prompt_index] = [self._completion(out, row * self.cfg.n + k, prompt_index, k)
                                       for k in range(self.cfg.n)]
            bar.update(len(idx))
            while next_out in ready:
                yield from ready.pop(next_out)
                next_out += 1
        bar.close()

    def _completion(self, out, row: int, prompt_index: int, sample_index: int) -> Completion:
        n = int(out["lengths"][row])
        tokens = [int(t) for t in out["tokens"][row, :n]]
        finish = FINISH_NAMES[int(out["finish"][row])]
        body = tokens[:-1] if finish == "eos" else tokens
        text, stopped = cut_at_stop(self.tok.decode(body), self.cfg.stop_strings)
        return Completion(text, tokens, [float(x) for x in out["logprobs"][row, :n]],
                          "stop" if stopped else finish, prompt_index, sample_index)
