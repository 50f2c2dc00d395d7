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
from jax.sharding import Mesh
from tqdm.auto import tqdm

from almost_jax.data.truncation import Truncations
from almost_jax.models.llama import CausalLM, param_shardings
from almost_jax.parallel import DEFAULT_RULES, batch_sharding, mesh_context
from almost_jax.parallel.shard import batch_multiple, to_global, to_host
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


def bucket_length(n: int, bucket: int, max_len: int | None = None) -> int:
    """`n` rounded up to a multiple of `bucket` (never beyond `max_len`): a few padded shapes,
    so a stream of batches compiles one program per bucket."""
    length = -(-n // bucket) * bucket
    return length if max_len is None else min(max_len, length)


def left_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        if s:
            ids[i, -len(s):] = s
            mask[i, -len(s):] = 1
    return ids, mask


class Sampler:
    """Text in, completions out, for one model and one sampling config.

    With a `mesh`, params live sharded by the logical rules (tensor parallel over heads, FSDP
    over embed) and each batch is split over data x fsdp; every host feeds the same prompts and
    gets every completion back, so the same code serves one CPU, a GPU host and a TPU pod. The
    batch size is rounded up to a multiple of the data-parallel width.
    """

    def __init__(self, model: CausalLM, params, tokenizer, cfg: SamplingConfig, batch_size: int = 32,
                 bucket: int = 32, max_prompt_len: Optional[int] = None, add_bos: Optional[bool] = None,
                 mesh: Optional[Mesh] = None, rules=DEFAULT_RULES):
        """add_bos: start prompts with BOS (None = as the tokenizer's model does, `tokenizer.add_bos`)."""
        self.model, self.tok, self.cfg = model, tokenizer, cfg
        self.bucket = bucket
        self.add_bos = getattr(tokenizer, "add_bos", True) if add_bos is None else add_bos
        limit = model.cfg.max_position_embeddings - cfg.max_new_tokens
        self.max_prompt_len = min(max_prompt_len or limit, limit)
        stop_seqs = [tokenizer.encode(s) for s in cfg.stop_strings]
        self.mesh, self.rules = mesh, rules
        param_sh = self._batch_sh = None
        if mesh is not None:
            param_sh = param_shardings(model.cfg, mesh, rules, "lm")
            self._batch_sh = batch_sharding(mesh)
            batch_size = batch_multiple(batch_size, mesh)
            params = None if params is None else jax.device_put(params, param_sh)
        self.params, self.batch_size = params, batch_size
        self._fn = make_generate_fn(model, cfg, tokenizer.eos_id, tokenizer.pad_id, stop_seqs, param_sh,
                                    self._batch_sh, valid_vocab=tokenizer.vocab_size)
        # Prompts longer than max_prompt_len keep their last tokens: warned and counted here
        # (`truncations.as_dict()` for a job's manifest).
        self.truncations = Truncations(f"prompt (max_prompt_len {self.max_prompt_len})")

    def encode(self, prompt: str) -> list[int]:
        return self.truncations.keep_last(self.tok.encode(prompt, add_bos=self.add_bos), self.max_prompt_len)

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
            length = bucket_length(max(map(len, seqs)), self.bucket)
            ids, mask = left_pad(seqs, length, self.tok.pad_id)
            out = self._run(params, ids, mask, jax.random.fold_in(key, b))
            for row, prompt_index in enumerate(idx):
                ready[prompt_index] = [self._completion(out, row * self.cfg.n + k, prompt_index, k)
                                       for k in range(self.cfg.n)]
            bar.update(len(idx))
            while next_out in ready:
                yield from ready.pop(next_out)
                next_out += 1
        bar.close()

    def _run(self, params, ids: np.ndarray, mask: np.ndarray, key) -> dict[str, np.ndarray]:
        if self.mesh is None:
            return jax.device_get(self._fn(params, ids, mask, key))
        with mesh_context(self.mesh, self.rules):
            out = self._fn(params, to_global(ids, self._batch_sh), to_global(mask, self._batch_sh), key)
        return {k: to_host(v) for k, v in out.items()}

    def _completion(self, out, row: int, prompt_index: int, sample_index: int) -> Completion:
        n = int(out["lengths"][row])
        tokens = [int(t) for t in out["tokens"][row, :n]]
        finish = FINISH_NAMES[int(out["finish"][row])]
        body = tokens[:-1] if finish == "eos" else tokens
        text, stopped = cut_at_stop(self.tok.decode(body), self.cfg.stop_strings)
        return Completion(text, tokens, [float(x) for x in out["logprobs"][row, :n]],
                          "stop" if stopped else finish, prompt_index, sample_index)
