"""Log-probabilities of text under a causal LM, for multiple-choice style evaluation.

Two questions, each answered for a whole list of prompts in fixed-shape batches (prompts sorted
by length, left-padded with `sampling.batcher.left_pad` to a multiple of `bucket` tokens, short
batches filled with dummy rows), so a stream of prompts compiles one program per length bucket:

* `next_token_logprobs`: log p(candidate token | prompt) at the prompt's end, from the model's
  `last_only=True` path (with left padding the last position is the last real token);
* `continuation_logprobs`: sum of log p(continuation tokens | prompt), and how many tokens.

Token ids in, numbers out; `TextScorer` adds the text side, including how an answer is tokenized
right after a prompt (see `next_token_id`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from almost_jax.sampling.batcher import bucket_length, left_pad


class LMScorer:
    """Batched, jitted scoring with one model. `max_len` caps prompt (+ continuation) tokens;
    longer inputs lose tokens from the LEFT (the end, where the answer is read, always survives)
    and are counted in `n_truncated`. Continuations need the full [batch, length, vocab] logits:
    keep `batch_size` modest for a large vocab."""

    def __init__(self, model, params, pad_id: int, max_len: int, batch_size: int = 16, bucket: int = 64):
        ctx = model.cfg.max_position_embeddings
        if max_len <= 0 or max_len > ctx:
            max_len = ctx
        self.params, self.pad_id, self.max_len = params, pad_id, max_len
        self.batch_size, self.bucket = batch_size, bucket
        self.n_truncated = 0

        def next_fn(p, ids, mask, cand):
            logits, _ = model.apply({"params": p}, ids, mask, last_only=True)
            logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32), axis=-1)
            return jnp.take_along_axis(logp, cand, axis=1)

        def cont_fn(p, ids, mask, target):
            logits, _ = model.apply({"params": p}, ids, mask)
            logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
            tok = jnp.take_along_axis(logp, ids[:, 1:, None], axis=2)[..., 0]
            scored = target[:, 1:].astype(jnp.float32)
            return jnp.sum(tok * scored, axis=1), jnp.sum(scored, axis=1)

        self._next = jax.jit(next_fn)
        self._cont = jax.jit(cont_fn)

    def _batches(self, seqs: Sequence[Sequence[int]]):
        """(original indices, left-padded ids, mask) per batch, longest sequences first."""
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            rows = [seqs[i] for i in idx] + [[self.pad_id]] * (self.batch_size - len(idx))
            length = bucket_length(max(map(len, rows)), self.bucket, self.max_len)
            ids, mask = left_pad(rows, length, self.pad_id)
            yield idx, ids, mask

    def _cut(self, ids: Sequence[int], keep: int) -> list[int]:
        if len(ids) > keep:
            self.n_truncated += 1
            return list(ids[len(ids) - keep:])
        return list(ids)

    def next_token_logprobs(self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]) -> np.ndarray:
        """[N, K]: log p(candidates[i][k] | prompts[i]); every row has the same K candidates."""
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate rows")
        if not prompts:
            return np.zeros((0, 0), np.float32)
        cand = np.asarray(candidates, np.int32)
        seqs = [self._cut(p, self.max_len) for p in prompts]
        if min(map(len, seqs)) == 0:
            raise ValueError("an empty prompt has no next-token distribution (encode with BOS)")
        out = np.zeros(cand.shape, np.float32)
        for idx, ids, mask in self._batches(seqs):
            rows = np.zeros((self.batch_size, cand.shape[1]), np.int32)
            rows[:len(idx)] = cand[idx]
            out[idx] = np.asarray(self._next(self.params, ids, mask, rows))[:len(idx)]
        return out

    def continuation_logprobs(self, prompts: Sequence[Sequence[int]],
                              continuations: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(sum of log p(continuation tokens | prompt), number of continuation tokens), each [N]."""
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        seqs, targets = [], []
        for i, (p, c) in enumerate(zip(prompts, continuations)):
            if not c or not p:
                raise ValueError(f"row {i}: prompt and continuation must both be non-empty")
            if len(c) >= self.max_len:
                raise ValueError(f"row {i}: continuation of {len(c)} tokens leaves no room for the prompt "
                                 f"(max_len {self.max_len})")
            p = self._cut(p, self.max_len - len(c))
            seqs.append(p + list(c))
            targets.append([0] * len(p) + [1] * len(c))
        total, count = np.zeros(len(seqs), np.float32), np.zeros(len(seqs), np.int32)
        for idx, ids, mask in self._batches(seqs):
            tgt, _ = left_pad([targets[i] for i in idx] + [[0]] * (self.batch_size - len(idx)), ids.shape[1], 0)
            s, n = self._cont(self.params, ids, mask, tgt)
            total[idx], count[idx] = np.asarray(s)[:len(idx)], np.asarray(n)[:len(idx)]
        return total, count


def next_token_id(tokenizer, prompt: str, answer: str, add_bos: bool = True) -> tuple[list[int], int]:
    """(prompt ids, id of `answer` as the single token that follows the prompt).

    Tokenizers encode a word differently at the start of a text and after other text (SentencePiece
    gives "▁A" for " A" but, after "Option", "A" would merge into "OptionA"), so the answer id is
    read off the encoding of `prompt + answer` itself: it must equal the prompt's own encoding plus
    exactly one token. Prompts end without a space and answers carry it (" A", " true"), as in
    `data.chat`. Raises ValueError naming the pieces when that does not hold.
    """
    p = tokenizer.encode(prompt, add_bos=add_bos)
    full = tokenizer.encode(prompt + answer, add_bos=add_bos)
    if len(full) != len(p) + 1 or full[:len(p)] != p:
        extra = full[len(p):] if full[:len(p)] == p else full[-3:]
        raise ValueError(
            f"answer {answer!r} is not one token after the prompt's end (prompt ...{prompt[-30:]!r} + answer "
            f"encodes its tail as {[tokenizer.decode([t]) for t in extra]}); choose answer strings the "
            f"tokenizer keeps as one token there (e.g. with or without a leading space)")
    return p, full[-1]


def continuation_ids(tokenizer, prompt: str, continuation: str, add_bos: bool = True) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids), split where `prompt + continuation` stops agreeing with the
    prompt's own encoding, so a token merged across the boundary counts as continuation."""
    p = tokenizer.encode(prompt, add_bos=add_bos)
    full = tokenizer.encode(prompt + continuation, add_bos=add_bos)
    k = 0
    while k < min(len(p), len(full)) and p[k] == full[k]:
        k += 1
    if k == len(full):
        raise ValueError(f"continuation {continuation!r} adds no tokens to the prompt")
    return full[:k], full[k:]


class TextScorer:
    """`LMScorer` with a tokenizer: strings in. The interface the policy benchmarks use."""

    def __init__(self, scorer: LMScorer, tokenizer, add_bos: bool = True):
        self.scorer, self.tok, self.add_bos = scorer, tokenizer, add_bos

    def next_text_logprobs(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """[N, K]: log p(answers[k] | prompts[i]), each answer a single token after the prompt."""
        ids, cand = [], []
        for i, prompt in enumerate(prompts):
            row = []
            for a in answers:
                try:
                    p, t = next_token_id(self.tok, prompt, a, self.add_bos)
                except ValueError as e:
                    raise ValueError(f"prompt {i}: {e}") from e
                row.append(t)
            ids.append(p)
            cand.append(row)
        return self.scorer.next_token_logprobs(ids, cand)

    def continuation_logprobs(self, prompts: Sequence[str],
                              continuations: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(summed log-likelihood, token count) of each continuation after its prompt."""
        pairs = [continuation_ids(self.tok, p, c, self.add_bos) for p, c in zip(prompts, continuations)]
        return self.scorer.continuation_logprobs([p for p, _ in pairs], [c for _, c in pairs])
