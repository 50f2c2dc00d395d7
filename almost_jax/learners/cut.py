"""CUT (Xu et al. 2024, "Reasons to Reject?"): learning from (instruction, response, judgment)
triples with likelihood on appropriate tokens and unlikelihood on the tokens the judgment flags
(peers.md 2). This follows the authors' code where it differs from the paper's equations.

An example is one response y to instruction x, in two contexts with the same response tokens:
  plain  = x -> y            (Align-P for a positive judgment; Misalign for a negative one)
  judged = [x, judgment] -> y (Align-N, for a negative judgment)
Token t of a negative example is flagged inappropriate when p(y_t | x, j) - lambda p(y_t | x) > 0
(the judgment makes the token more likely: the judgment talks about it), detached.

    L1 (Misalign, plain context, negatives only): mean over their tokens of
        -log p(y_t|x)                                    t not flagged
        -alpha p(y_t|x,j)^gamma log max(1 - p(y_t|x), 1e-5)   t flagged
    L2 (MLE): mean over tokens of -log p(y|x) for positives and -log p(y|x,j) for negatives
    loss = (L1 + L2) / 2 when the batch has a negative example, else L2   (the code's combination)

gamma = 0 is the code (constant weight alpha); the paper's focal weight p^gamma is the option.
Layout as learners/rl.rollout_arrays: [context left-padded to P | response right-padded to R].
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from almost_jax.data import chat
from almost_jax.data.truncation import Truncations
from almost_jax.learners.preference import prompt_and_response_ids
from almost_jax.learners.rl import response_logits, rollout_arrays, token_logprobs

UNLIKELIHOOD_FLOOR = 1e-5  # 1 - p floored before the log, as in the CUT code


def judged_prompt(prompt: str, judgment: str, template: str) -> str:
    """The context of the Align-N copy: `template` with {prompt} ("\\n\\nHuman: x") and {judgment};
    the result is followed by "\\n\\nAssistant:" like every prompt."""
    return template.format(prompt=prompt, judgment=judgment)


def flag_tokens(p_judged, p_plain, threshold: float):
    """1 where p(y_t | x, j) - threshold * p(y_t | x) > 0: the tokens the judgment points at."""
    return (p_judged - threshold * p_plain > 0).astype(jnp.float32)


def cut_loss(logp_plain, logp_judged, mask, negative, threshold: float, alpha: float, gamma: float = 0.0):
    """CUT's loss from per-token log-probs [B, R] of the response in both contexts; `mask` [B, R]
    marks response tokens, `negative` [B] the examples with a negative judgment. Returns (loss,
    metrics)."""
    neg = negative[:, None] * mask
    pos = (1.0 - negative[:, None]) * mask
    p_plain, p_judged = jnp.exp(logp_plain), jnp.exp(logp_judged)
    flagged = flag_tokens(jax.lax.stop_gradient(p_judged), jax.lax.stop_gradient(p_plain), threshold) * neg
    weight = alpha * jax.lax.stop_gradient(p_judged) ** gamma if gamma else alpha
    unlikely = -weight * jnp.log(jnp.maximum(1.0 - p_plain, UNLIKELIHOOD_FLOOR))
    l1_tokens = flagged * unlikely + (neg - flagged) * (-logp_plain)
    n_neg = jnp.sum(neg)
    l1 = jnp.sum(l1_tokens) / jnp.maximum(n_neg, 1.0)
    mle_tokens = pos * (-logp_plain) + neg * (-logp_judged)
    l2 = jnp.sum(mle_tokens) / jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.where(n_neg > 0, 0.5 * (l1 + l2), l2)
    metrics = {"unlikelihood_loss": l1, "mle_loss": l2, "flagged_tokens": jnp.sum(flagged),
               "flagged_fraction": jnp.sum(flagged) / jnp.maximum(n_neg, 1.0), "negative_tokens": n_neg}
    return loss, metrics


def make_cut_loss(model, cfg, prompt_len: int, valid_vocab: int = 0):
    """loss_fn(params, batch, rng) for train/step from a `cut` block (threshold, alpha, gamma); both
    contexts go through the model in one concatenated forward."""
    threshold, alpha, gamma = float(cfg.threshold), float(cfg.alpha), float(cfg.gamma)

    def loss_fn(params, batch, rng):
        del rng
        ids = jnp.concatenate([batch["plain_input_ids"], batch["judged_input_ids"]])
        attn = jnp.concatenate([batch["plain_attention_mask"], batch["judged_attention_mask"]])
        logits = response_logits(model, params, {"input_ids": ids, "attention_mask": attn}, prompt_len, 1.0,
                                 valid_vocab)
        logp = token_logprobs(logits, ids[:, prompt_len:])
        n = batch["plain_input_ids"].shape[0]
        return cut_loss(logp[:n], logp[n:], batch["response_mask"], batch["negative"], threshold, alpha, gamma)

    return loss_fn


def cut_arrays(tokenizer, records: Sequence, prompt_len: int, response_len: int, template: str):
    """Arrays for RowBatches from JudgmentRecords (instruction, response, judgment; judgment "" =
    positive): plain_* and judged_* input_ids / attention_mask, the shared response_mask and
    `negative` [N]; and counts. Examples whose response tokenises differently after the two contexts
    are dropped (counted)."""
    cuts = Truncations(f"CUT context (prompt_len {prompt_len})")
    plain_ctx, judged_ctx, responses, negative = [], [], [], []
    mismatched = response_cuts = 0
    for rec in records:
        prompt = chat.format_turn(chat.HUMAN, rec.instruction)
        p_ids, r_ids = prompt_and_response_ids(tokenizer, prompt, rec.response)
        is_negative = bool(rec.judgment.strip())
        if is_negative:
            j_ids, r2 = prompt_and_response_ids(tokenizer, judged_prompt(prompt, rec.judgment, template), rec.response)
            if r2 != r_ids:
                mismatched += 1
                continue
        else:
            j_ids = p_ids  # unused: positives train on the plain context only
        response_cuts += len(r_ids) > response_len
        plain_ctx.append(cuts.keep_last(p_ids, prompt_len))
        judged_ctx.append(cuts.keep_last(j_ids, prompt_len))
        responses.append(r_ids[:response_len])
        negative.append(float(is_negative))
    if not responses:
        raise ValueError("no CUT examples")
    cuts.report()
    plain = rollout_arrays(plain_ctx, responses, prompt_len, response_len, tokenizer.pad_id)
    judged = rollout_arrays(judged_ctx, responses, prompt_len, response_len, tokenizer.pad_id)
    arrays = {"plain_input_ids": plain["input_ids"], "plain_attention_mask": plain["attention_mask"],
              "judged_input_ids": judged["input_ids"], "judged_attention_mask": judged["attention_mask"],
              "response_mask": plain["response_mask"], "negative": np.asarray(negative, np.float32)}
    stats = {"examples": len(responses), "negative": int(sum(negative)), "positive": int(len(negative) - sum(negative)),
             "dropped_tokenisation_mismatch": mismatched, "contexts_truncated": cuts.truncated,
             "responses_truncated": int(response_cuts)}
    return arrays, stats


def downsample_positives(records: Sequence, ratio: float, seed: int) -> list:
    """Keep every negative and at most ratio x #negatives positives (CUT: --downsample 0.25)."""
    neg = [r for r in records if r.judgment.strip()]
    pos = [r for r in records if not r.judgment.strip()]
    keep = min(len(pos), int(ratio * len(neg)))
    idx = np.random.default_rng(seed).permutation(len(pos))[:keep]
    return neg + [pos[i] for i in sorted(idx)]
