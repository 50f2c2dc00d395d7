"""SPA ("Selfie", Kim et al. 2025): label the policy's own samples by its implicit reward, then DPO
with noise-aware self-refinement (peers.md 3).

* Labelling (direct preference judgment): each prompt gets K sampled replies; the implicit reward
  of a reply is r(x, y) = log pi_cur(y|x) - log pi_ref(y|x) (summed log-probs; pi_ref = the initial
  SFT policy; beta omitted, as the SPA code does: only the argmax matters). The highest-reward reply
  is chosen, the lowest rejected (`min_max`).
* Self-refinement: a pair whose DPO margin m = beta * h (detached) is at or below tau, the
  `quantile` point of recent margins, is suspected noisy and trained with label smoothing alpha;
  the rest get plain DPO: eps_i = alpha * (1 - 1[m_i > tau]) in learners/preference.dpo_losses.
  tau = the mean of the sorted margins at positions int(n * quantile) and the one after (SPA: a
  window of the last 50 per-example margins, quantile 0.1). Here the window is the current batch
  (each micro-batch under gradient accumulation), so the step stays a pure function; alpha is 0 for the first `warmup_fraction` of the steps
  (SPA: 20%), carried per row as `refine_alpha` (see `refine_alpha_column`).
* Not implemented: SPA's de-coupled noise detection (margins from logits extrapolated between
  policy and reference); its shipped config has it off (`decouple_denoising=1`).
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from almost_jax.data.schemas import ComparisonRecord, Provenance


def implicit_rewards(policy_logp, ref_logp):
    """r(x, y) = log pi_cur(y|x) - log pi_ref(y|x), per reply."""
    return np.asarray(policy_logp, np.float64) - np.asarray(ref_logp, np.float64)


def label_by_implicit_reward(prompts: Sequence[str], replies: Sequence[Sequence[str]], rewards,
                             label: str = "spa") -> list[ComparisonRecord]:
    """prompts [N] ("\\n\\nHuman: q"), replies [N][K], rewards [N, K] -> one pair per prompt: the
    highest-reward reply chosen, the lowest rejected. Prompts whose extreme replies are identical
    texts or tie in reward give no pair."""
    rewards = np.asarray(rewards, np.float64)
    out = []
    for i, (prompt, cands) in enumerate(zip(prompts, replies)):
        w, lo = int(np.argmax(rewards[i])), int(np.argmin(rewards[i]))
        if rewards[i, w] == rewards[i, lo] or cands[w] == cands[lo]:
            continue
        out.append(ComparisonRecord(prompt=prompt, chosen=cands[w], rejected=cands[lo], id=f"{label}-{i}",
                                    provenance=Provenance(chosen_setup=label, rejected_setup=label,
                                                          filters={"label": "implicit_reward",
                                                                   "reward_gap": round(float(rewards[i, w] - rewards[i, lo]), 4)})))
    return out


def confidence_threshold(margins, quantile: float):
    """tau: the mean of the sorted margins at k = int(n * quantile) and k + 1 (clipped to the last)."""
    s = jnp.sort(margins)
    n = s.shape[0]
    k = min(int(n * quantile), n - 1)
    return 0.5 * (s[k] + s[min(k + 1, n - 1)])


def refined_smoothing(margins, alpha, quantile: float):
    """Per-pair label smoothing: alpha for pairs with margin <= tau (suspected noisy), 0 otherwise."""
    confident = (margins > confidence_threshold(margins, quantile)).astype(jnp.float32)
    return alpha * (1.0 - confident)


def make_smoothing_fn(quantile: float):
    """learners/preference.make_dpo_loss's smoothing_fn: alpha per row from the batch (0 in warm-up)."""
    def smoothing(margins, batch):
        return refined_smoothing(margins, batch["refine_alpha"], quantile)
    return smoothing


def refine_alpha_column(step_of_row: np.ndarray, total_steps: int, alpha: float, warmup_fraction: float) -> np.ndarray:
    """The `refine_alpha` of each row: 0 when the row is trained before warmup_fraction * total_steps,
    alpha after. `step_of_row[i]` is the step that sees row i (one epoch: each row seen once)."""
    warm = int(warmup_fraction * total_steps)
    return np.where(step_of_row >= warm, alpha, 0.0).astype(np.float32)
