"""Offline preference learning from pairs: DPO, with cDPO label smoothing and IPO as options.

Loss (peers.md 4.1), per pair, with summed response log-probs of the policy (pi) and the frozen
reference (ref):

    h = (log pi(y_w|x) - log pi(y_l|x)) - (log ref(y_w|x) - log ref(y_l|x))
    sigmoid (DPO), smoothing eps (cDPO):  -(1 - eps) log s(beta h) - eps log s(-beta h)
    ipo:                                   (h - 1 / (2 beta))^2

eps may be one number (cDPO: the assumed flip rate) or one per pair (SPA's self-refinement,
learners/spa.py). Implicit rewards beta * (log pi - log ref) of chosen and rejected are logged.

A pair is laid out like an RL rollout (learners/rl.rollout_arrays): [prompt left-padded to P |
response right-padded to R], response = " " + reply + EOS, the tokens SFT trains on. Chosen and
rejected go through the model in one concatenated forward. The reference log-probs are either
precomputed once (`reference_logprobs`, a pass over the data before training; the batch then
carries `ref_chosen_logp` / `ref_rejected_logp`) or computed on the fly from reference params.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from almost_jax.data import chat
from almost_jax.data.sft_data import example_from_pair
from almost_jax.data.truncation import Truncations
from almost_jax.learners.rl import response_logits, rollout_arrays, token_logprobs
from almost_jax.parallel import DEFAULT_RULES, batch_sharding, mesh_context
from almost_jax.parallel.shard import to_global, to_host

LOSSES = ("sigmoid", "ipo")
SIDES = ("chosen", "rejected")


def dpo_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, loss: str = "sigmoid",
               label_smoothing=0.0):
    """Per-pair losses and the (detached) implicit rewards of chosen and rejected; all inputs [B]
    summed log-probs. `label_smoothing`: a float or a [B] array (sigmoid loss only)."""
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if loss == "sigmoid":
        eps = label_smoothing
        losses = -(1.0 - eps) * jax.nn.log_sigmoid(beta * h) - eps * jax.nn.log_sigmoid(-beta * h)
    elif loss == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"dpo.loss must be one of {LOSSES}, got {loss!r}")
    chosen_rewards = jax.lax.stop_gradient(beta * (policy_chosen - ref_chosen))
    rejected_rewards = jax.lax.stop_gradient(beta * (policy_rejected - ref_rejected))
    return losses, chosen_rewards, rejected_rewards


def check_dpo_config(cfg) -> None:
    """The dpo block's loss options, checked before any model is loaded."""
    if cfg.loss not in LOSSES:
        raise ValueError(f"dpo.loss must be one of {LOSSES}, got {cfg.loss!r}")
    if not float(cfg.beta) > 0:
        raise ValueError(f"dpo.beta must be > 0, got {cfg.beta}")
    eps = float(cfg.label_smoothing)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"dpo.label_smoothing (cDPO's flip rate) must be in [0, 0.5), got {eps}")
    if eps and cfg.loss != "sigmoid":
        raise ValueError("dpo.label_smoothing applies to the sigmoid loss only (cDPO); IPO has none")
    if cfg.reference not in ("precomputed", "on_the_fly"):
        raise ValueError(f"dpo.reference must be precomputed or on_the_fly, got {cfg.reference!r}")


# ----- batch builder -----

def prompt_and_response_ids(tokenizer, prompt: str, reply: str) -> tuple[list[int], list[int]]:
    """Token ids of the context (`prompt` + "\\n\\nAssistant:") and of " " + reply + EOS, split where
    SFT's loss mask starts (data/sft_data.example_from_pair)."""
    ids, mask = example_from_pair(tokenizer, prompt + chat.REPLY_PREFIX, reply)
    boundary = mask.index(1)
    return ids[:boundary], ids[boundary:]


def response_arrays(tokenizer, prompts, replies, prompt_len: int, response_len: int):
    """[prompt | response] rows (input_ids, attention_mask, response_mask) for replies to prompts
    ("\\n\\nHuman: ..."), and (prompts cut, responses cut): prompts keep their last `prompt_len`
    tokens, responses their first `response_len` (a cut response loses its EOS)."""
    prompt_cuts = Truncations(f"prompt (prompt_len {prompt_len})")
    p_ids, r_ids, response_cuts = [], [], 0
    for prompt, reply in zip(prompts, replies):
        p, r = prompt_and_response_ids(tokenizer, prompt, reply)
        p_ids.append(prompt_cuts.keep_last(p, prompt_len))
        r_ids.append(r[:response_len])
        response_cuts += len(r) > response_len
    prompt_cuts.report()
    return rollout_arrays(p_ids, r_ids, prompt_len, response_len, tokenizer.pad_id), (prompt_cuts.truncated, response_cuts)


def pair_arrays(tokenizer, records, prompt_len: int, response_len: int) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays for RowBatches from records with .prompt ("\\n\\nHuman: ..."), .chosen, .rejected:
    `{side}_input_ids`, `{side}_attention_mask`, `{side}_response_mask` for side in chosen/rejected;
    and counts (see `response_arrays` for the lengths). Pairs with identical replies are dropped."""
    kept = [r for r in records if r.chosen != r.rejected]
    if not kept:
        raise ValueError("no preference pairs with distinct chosen and rejected replies")
    out, stats = {}, {"pairs": len(kept), "dropped_identical": len(records) - len(kept)}
    for side in SIDES:
        arr, (p_cut, r_cut) = response_arrays(tokenizer, [r.prompt for r in kept], [getattr(r, side) for r in kept],
                                              prompt_len, response_len)
        out.update({f"{side}_{k}": v for k, v in arr.items()})
        stats["prompts_truncated"], stats[f"{side}_truncated"] = p_cut, int(r_cut)
    return out, stats


# ----- log-probs -----

def sequence_logprobs(model, params, input_ids, attention_mask, response_mask, prompt_len: int,
                      valid_vocab: int = 0):
    """Summed log-prob of each row's response tokens under `params`: [B]."""
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    logits = response_logits(model, params, batch, prompt_len, 1.0, valid_vocab)
    return jnp.sum(token_logprobs(logits, input_ids[:, prompt_len:]) * response_mask, axis=-1)


def pair_logprobs(model, params, batch, prompt_len: int, valid_vocab: int = 0):
    """(chosen, rejected) summed log-probs, both sides in one concatenated forward."""
    cat = lambda key: jnp.concatenate([batch[f"chosen_{key}"], batch[f"rejected_{key}"]])  # noqa: E731
    logp = sequence_logprobs(model, params, cat("input_ids"), cat("attention_mask"), cat("response_mask"),
                             prompt_len, valid_vocab)
    n = batch["chosen_input_ids"].shape[0]
    return logp[:n], logp[n:]


@functools.lru_cache(maxsize=16)
def _logprob_fn(model, prompt_len: int, valid_vocab: int):
    """One jitted scorer per (model, layout): passes over chosen, rejected and later rounds reuse it."""
    return jax.jit(lambda p, ids, attn, m: sequence_logprobs(model, p, ids, attn, m, prompt_len, valid_vocab))


def batched_logprobs(model, params, rows: dict[str, np.ndarray], prompt_len: int, batch_size: int,
                     valid_vocab: int = 0, mesh=None, rules=None) -> np.ndarray:
    """Summed response log-probs [N] of `rows` (input_ids, attention_mask, response_mask) in one
    pass of fixed-size batches (the last one padded with repeated rows: one compiled program). With
    a `mesh`, `params` are sharded on it and each batch is split over its data axes."""
    fn = _logprob_fn(model, prompt_len, valid_vocab)
    keys = ("input_ids", "attention_mask", "response_mask")
    place = (lambda x: to_global(x, batch_sharding(mesh, x.ndim))) if mesh is not None else jnp.asarray
    n = len(rows["input_ids"])
    out = np.zeros(n, np.float32)
    with (mesh_context(mesh, rules or DEFAULT_RULES) if mesh is not None else contextlib.nullcontext()):
        for start in range(0, n, batch_size):
            idx = np.arange(start, start + batch_size) % n
            lp = to_host(fn(params, *(place(rows[k][idx]) for k in keys)))
            keep = min(batch_size, n - start)
            out[start:start + keep] = lp[:keep]
    return out


def reference_logprobs(model, params, arrays: dict[str, np.ndarray], prompt_len: int, batch_size: int,
                       valid_vocab: int = 0, mesh=None, rules=None) -> dict[str, np.ndarray]:
    """The pass over the pairs with the reference params before training: `ref_chosen_logp`,
    `ref_rejected_logp` [N]."""
    return {f"ref_{side}_logp": batched_logprobs(model, params, {k: arrays[f"{side}_{k}"] for k in
                                                                  ("input_ids", "attention_mask", "response_mask")},
                                                 prompt_len, batch_size, valid_vocab, mesh, rules) for side in SIDES}


# ----- the loss -----

SmoothingFn = Callable[[jax.Array, dict], jax.Array]  # (beta * h detached [B], batch) -> eps [B]


def make_dpo_loss(model, cfg, prompt_len: int, valid_vocab: int = 0, ref_params=None,
                  smoothing_fn: Optional[SmoothingFn] = None):
    """loss_fn(params, batch, rng) for train/step from a `dpo` block (loss, beta, label_smoothing,
    reference). With reference="on_the_fly", `ref_params` (frozen) give the reference log-probs each
    step; otherwise the batch carries them. `smoothing_fn` replaces the constant label smoothing by
    one per pair (SPA)."""
    check_dpo_config(cfg)
    beta, loss_type, eps = float(cfg.beta), cfg.loss, float(cfg.label_smoothing)
    on_the_fly = cfg.reference == "on_the_fly"
    if on_the_fly and ref_params is None:
        raise ValueError("dpo.reference=on_the_fly needs the reference params")

    def loss_fn(params, batch, rng):
        del rng
        pc, pr = pair_logprobs(model, params, batch, prompt_len, valid_vocab)
        if on_the_fly:
            rc, rr = jax.lax.stop_gradient(pair_logprobs(model, ref_params, batch, prompt_len, valid_vocab))
        else:
            rc, rr = batch["ref_chosen_logp"], batch["ref_rejected_logp"]
        smoothing = eps
        if smoothing_fn is not None:
            smoothing = smoothing_fn(jax.lax.stop_gradient(beta * ((pc - pr) - (rc - rr))), batch)
        losses, r_w, r_l = dpo_losses(pc, pr, rc, rr, beta, loss_type, smoothing)
        metrics = {"reward_chosen": jnp.mean(r_w), "reward_rejected": jnp.mean(r_l),
                   "reward_margin": jnp.mean(r_w - r_l), "reward_accuracy": jnp.mean((r_w > r_l).astype(jnp.float32)),
                   "logp_chosen": jnp.mean(pc), "logp_rejected": jnp.mean(pr),
                   "label_smoothing": jnp.mean(jnp.asarray(smoothing, jnp.float32))}
        return jnp.mean(losses), metrics

    return loss_fn


def mean_margin(model, params, arrays: dict[str, np.ndarray], prompt_len: int, batch_size: int,
                valid_vocab: int = 0) -> float:
    """Mean over pairs of log pi(chosen) - log pi(rejected): what DPO pushes up (for tests and reports)."""
    lp = reference_logprobs(model, params, arrays, prompt_len, batch_size, valid_vocab)
    return float(np.mean(lp["ref_chosen_logp"] - lp["ref_rejected_logp"]))
