"""Simulated pairwise annotators in AlpacaFarm's style (facts: peers.md 1.8): a pluggable judge,
optional label noise and position-bias randomisation, used both to label comparisons for training
(`label_pairs`, `jobs/annotate.py`) and to evaluate (`winrate.win_rate(annotator, ...)`).

Judges (`winrate.Judge`: (prompts, first, second) -> 1 / 0.5 / 0 for `first`; prompts are the
dialogue so far in the chat format, "\\n\\nHuman: q", as ComparisonRecord.prompt and the RM take):
* the reward model (`winrate.rm_judge`): higher raw score wins;
* the mini world's gold oracle (`winrate.oracle_judge`): evaluation, or a marked control when it
  labels training pairs (`Annotator.control`, written into every record it labels);
* a prompted local model (`prompted_judge`): asked which of two replies is better (a judge prompt
  file such as ab_judge.txt); its next-token log-probabilities of the two labels (" A", " B") decide.

An `Annotator` wraps a judge: per pair it shows the replies in a random order (so a judge that
favours one position is not rewarded for it) and flips the outcome with probability `flip_prob`
(AlpacaFarm flips 25% of training labels, none at evaluation). Both draws are a pure function of
(seed, pair id), so a pair gets the same order and flip in any batch, order or run.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional, Sequence

import numpy as np

from almost_jax.data.schemas import ComparisonRecord, Provenance
from almost_jax.evaluation.policy_benchmarks import JudgePrompt, rename_labels
from almost_jax.evaluation.winrate import Judge

JUDGES = ("rm", "oracle", "prompted")


def pair_draws(seed: int, pair_ids: Sequence[str]) -> np.ndarray:
    """[N, 2] uniforms in [0, 1) per pair: column 0 decides the order, column 1 the flip."""
    out = np.empty((len(pair_ids), 2))
    for i, pid in enumerate(pair_ids):
        digest = hashlib.sha256(f"{seed}\x00{pid}".encode()).digest()
        out[i] = np.random.default_rng(int.from_bytes(digest[:8], "little")).random(2)
    return out


@dataclasses.dataclass
class Annotator:
    """A judge with AlpacaFarm's simulated-annotator knobs. Call as
    `annotator(prompts, a, b, ids=None) -> outcomes for a` (1 a wins, 0.5 tie, 0 b wins); `ids`
    name the pairs (default: their positions, "0", "1", ...)."""

    judge: Judge
    name: str
    flip_prob: float = 0.0
    randomize_order: bool = True
    seed: int = 0
    control: bool = False  # the gold oracle labelling training data: a control run, never the method

    def __post_init__(self):
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"annotator {self.name}: flip_prob must be in [0, 1], got {self.flip_prob}")

    def __call__(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str],
                 ids: Optional[Sequence[str]] = None) -> np.ndarray:
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"annotator {self.name}: {len(prompts)} prompts, {len(a)} and {len(b)} replies")
        ids = [str(i) for i in range(len(prompts))] if ids is None else [str(i) for i in ids]
        if len(ids) != len(prompts) or len(set(ids)) != len(ids):
            raise ValueError(f"annotator {self.name}: pair ids must be unique, one per pair")
        draws = pair_draws(self.seed, ids)
        swap = (draws[:, 0] < 0.5) if self.randomize_order else np.zeros(len(ids), bool)
        first = [y if s else x for x, y, s in zip(a, b, swap)]
        second = [x if s else y for x, y, s in zip(a, b, swap)]
        shown = np.asarray(self.judge(list(prompts), first, second), np.float64).reshape(len(ids))
        outcome = np.where(swap, 1.0 - shown, shown)  # back to "a wins"
        flip = draws[:, 1] < self.flip_prob
        return np.where(flip, 1.0 - outcome, outcome)


def prompted_judge(scorer, prompt: JudgePrompt, answers: Sequence[str] = (" A", " B")) -> Judge:
    """A local model asked which reply is better: `prompt` (fields context, response_a, response_b)
    shows the dialogue (turn labels renamed Query/Response, as the Static HHH benchmark does) and
    the two replies; the reply whose label is the likelier next token wins (equal: a tie).
    `scorer`: anything with `next_text_logprobs(prompts, answers)` (lm_scoring.TextScorer)."""
    if len(answers) != 2:
        raise ValueError(f"a pairwise judge needs two answer labels, got {list(answers)}")

    def judge(prompts, first, second):
        texts = [prompt.render(context=rename_labels(p).strip(), response_a=x, response_b=y)
                 for p, x, y in zip(prompts, first, second)]
        logp = np.asarray(scorer.next_text_logprobs(texts, list(answers)), np.float64)
        return np.where(logp[:, 0] > logp[:, 1], 1.0, np.where(logp[:, 1] > logp[:, 0], 0.0, 0.5))

    return judge


def build_annotator(cfg, rm_scorer=None) -> Annotator:
    """An Annotator from a config block (`annotator_config()`); `rm_scorer` reuses a loaded RM."""
    from almost_jax.evaluation.winrate import oracle_judge, rm_judge
    if cfg.judge == "rm":
        if rm_scorer is None:
            from almost_jax.learners.reward import load_reward_model
            if not cfg.rm_path:
                raise ValueError("annotator.judge='rm' needs annotator.rm_path (the directory train_rm wrote)")
            rm_scorer = load_reward_model(cfg.rm_path, batch_size=int(cfg.batch_size))
        judge, control = rm_judge(rm_scorer), False
    elif cfg.judge == "oracle":
        judge, control = oracle_judge(), True
    elif cfg.judge == "prompted":
        judge, control = load_prompted_judge(cfg.prompted, int(cfg.batch_size)), False
    else:
        raise ValueError(f"annotator.judge must be one of {JUDGES}, got {cfg.judge!r}")
    return Annotator(judge, cfg.judge, float(cfg.flip_prob), bool(cfg.randomize_order), int(cfg.seed), control)


def load_prompted_judge(cfg, batch_size: int = 16) -> Judge:
    """The prompted judge of a config block: model/params/tokenizer (as chat.py's), prompt file, labels."""
    from almost_jax.checkpoints.load import load_model_params
    from almost_jax.checkpoints.source import resolve
    from almost_jax.evaluation.lm_scoring import LMScorer, TextScorer
    from almost_jax.evaluation.policy_benchmarks import load_judge_prompt
    from almost_jax.models.llama import CausalLM
    prompt = load_judge_prompt(cfg.prompt, ("context", "response_a", "response_b"))
    src = resolve(cfg, "params")
    lm = LMScorer(CausalLM(src.model), load_model_params(src.params, src.model), src.tokenizer.pad_id,
                  int(cfg.max_len), batch_size)
    return prompted_judge(TextScorer(lm, src.tokenizer, src.tokenizer.add_bos), prompt, tuple(cfg.answers))


def annotator_config(judge: str = "rm"):
    """judge: rm | oracle (a control for training labels) | prompted; flip_prob: label noise
    (AlpacaFarm: 0.25 for training labels, 0 for evaluation); randomize_order: random order per pair."""
    from ml_collections import ConfigDict

    from almost_jax.config_lib import model_block, tokenizer_fields
    return ConfigDict(dict(
        judge=judge, flip_prob=0.0, randomize_order=True, seed=0, rm_path="", batch_size=32,
        prompted=ConfigDict(dict(model=model_block("mini-l"), params="", **tokenizer_fields(), prompt="ab_judge.txt",
                                 answers=(" A", " B"), max_len=0))))


def label_pairs(annotator: Annotator, ids: Sequence[str], prompts: Sequence[str], a: Sequence[str],
                b: Sequence[str], setups: tuple[str, str] = ("a", "b")) -> tuple[list[ComparisonRecord], dict]:
    """ComparisonRecords (chosen = the annotator's pick) for every pair it does not tie; pairs of
    identical replies are skipped. Returns (records, counts)."""
    keep = [i for i in range(len(ids)) if a[i] != b[i]]
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    outcome = annotator(pick(prompts), pick(a), pick(b), pick(ids)) if keep else np.zeros(0)
    filters = {"label": annotator.name, "flip_prob": annotator.flip_prob, "randomize_order": annotator.randomize_order}
    if annotator.control:
        filters["control"] = True
    records = []
    for i, o in zip(keep, outcome):
        if o == 0.5:
            continue
        (cs, c), (rs, r) = ((setups[0], a[i]), (setups[1], b[i])) if o == 1.0 else ((setups[1], b[i]), (setups[0], a[i]))
        records.append(ComparisonRecord(prompt=prompts[i], chosen=c, rejected=r, id=str(ids[i]),
                                        provenance=Provenance(chosen_setup=cs, rejected_setup=rs, filters=dict(filters))))
    counts = {"pairs": len(ids), "identical": len(ids) - len(keep), "ties": int(np.sum(outcome == 0.5)),
              "labelled": len(records), "a_preferred": float(np.mean(outcome)) if len(outcome) else float("nan")}
    return records, counts
