"""ALMoST's policy benchmarks from local files in their published formats.

* Static HHH (ALMoST's eval/data/hhh_eval.json: a JSON list of {chosen, rejected, type}): the
  policy is asked which of two replies to a dialogue is better, once with the chosen reply shown
  as A and once as B. As in ALMoST, score(chosen) = p(A | chosen is A) + p(B | chosen is B),
  score(rejected) likewise, and an item is correct when score(chosen) >= score(rejected) (ties
  count as correct, as in ALMoST's code; their number is reported). Inside the shown dialogue the
  labels become "Query:" / "Response:" so they do not clash with the prompt's own chat turns.
* TruthfulQA MC1 (HF datasets `truthful_qa` / `multiple_choice` validation, exported as a JSON
  list or JSONL): mode "true_false" (ALMoST) asks for every choice whether the answer is true
  and ranks the choices by log p(" true"); modes "loglik_sum" / "loglik_mean" rank them by the
  summed / per-token log-likelihood of the answer after the question (the standard MC1 scoring).
  An item is correct when the top-ranked choice has label 1.

The question wordings are prompt files (almost_jax/data/prompts, see `load_judge_prompt`).
Scoring goes through any object with `next_text_logprobs(prompts, answers)` and
`continuation_logprobs(prompts, continuations)` (`lm_scoring.TextScorer`), so the arithmetic
here is testable with a fake.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import string
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from almost_jax.data import chat
from almost_jax.data.errors import InputError
from almost_jax.data.schemas import RecordError, StaticHHHItem, read_static_hhh, split_hh_pair
from almost_jax.data.templates import prompt_path

FORMATS = ("static_hhh", "truthfulqa_mc1")
TRUTHFULQA_MODES = ("true_false", "loglik_sum", "loglik_mean")
_LABEL_AT_TURN = re.compile(r"(^|\n\n)(Human|Assistant):")
_RENAMED = {"Human": "Query", "Assistant": "Response"}


# ---------------------------------------------------------------- prompt files

@dataclasses.dataclass
class JudgePrompt:
    """A one-turn question for the policy and the opening words of its answer.

    Rendered in the chat format: ``"\\n\\nHuman: " + human + "\\n\\nAssistant:" + (" " + lead)``,
    so the prompt ends without a space and the scored answer (" A", " true") brings its own.
    """

    human: str
    lead: str
    source: str = "<string>"

    def render(self, **fields: str) -> str:
        prompt = chat.prompt_for_reply([], self.human.format(**fields))
        return prompt + (" " + self.lead.format(**fields) if self.lead else "")


def parse_judge_prompt(text: str, fields: Sequence[str], source: str = "<string>") -> JudgePrompt:
    """A prompt file is a ``Human:`` turn then an ``Assistant:`` turn (possibly empty: the answer
    then starts the reply); ``{field}`` placeholders must be exactly ``fields``."""
    try:
        turns = chat.parse_dialogue(text.strip())
    except ValueError as e:
        raise InputError(source, str(e)) from None
    if [s for s, _ in turns] != [chat.HUMAN, chat.ASSISTANT]:
        raise InputError(source, f"expected one 'Human:' turn then one 'Assistant:' turn, "
                                 f"got {[chat.LABELS[s] for s, _ in turns]}")
    (_, human), (_, lead) = turns
    used = {name for part in (human, lead) for _, name, _, _ in string.Formatter().parse(part) if name is not None}
    if used != set(fields):
        raise InputError(source, f"placeholders {sorted(used)} but this benchmark fills {sorted(fields)}")
    return JudgePrompt(human, lead, source)


def load_judge_prompt(name: str, fields: Sequence[str]) -> JudgePrompt:
    """A prompt file by path, or by name in almost_jax/data/prompts."""
    path = name if Path(name).is_file() else prompt_path(name)
    if not Path(path).is_file():
        raise FileNotFoundError(f"prompt file not found: {name} (nor {path})")
    return parse_judge_prompt(Path(path).read_text(encoding="utf-8"), fields, path)


# ---------------------------------------------------------------- Static HHH

def rename_labels(dialogue: str) -> str:
    """"Human:"/"Assistant:" turn labels -> "Query:"/"Response:". Only where a turn starts (text
    start or after a blank line); ALMoST's str.replace also rewrote the words inside turn texts."""
    return _LABEL_AT_TURN.sub(lambda m: m.group(1) + _RENAMED[m.group(2)] + ":", dialogue)


def hhh_prompts(items: Sequence[StaticHHHItem], prompt: JudgePrompt) -> tuple[list[str], list[str]]:
    """(prompts with the chosen reply as A, prompts with the chosen reply as B)."""
    ab, ba = [], []
    for i, item in enumerate(items):
        try:
            dialogue, chosen, rejected = split_hh_pair(item)
        except ValueError as e:
            raise ValueError(f"Static HHH item {i}: {e}") from e
        context = rename_labels(dialogue[: -len(chat.REPLY_PREFIX)]).strip()
        ab.append(prompt.render(context=context, response_a=chosen, response_b=rejected))
        ba.append(prompt.render(context=context, response_a=rejected, response_b=chosen))
    return ab, ba


def evaluate_static_hhh(items: Sequence[StaticHHHItem], scorer, prompt: JudgePrompt,
                        answers: Sequence[str] = (" A", " B")) -> dict:
    """Accuracy overall and per type; `prefers_a` is the share of prompts with p(A) > p(B)
    (0.5 for a policy without position bias)."""
    if len(answers) != 2:
        raise ValueError(f"Static HHH needs two answer strings (A, B), got {list(answers)}")
    if not items:
        raise ValueError("no Static HHH items")
    ab, ba = hhh_prompts(items, prompt)
    n = len(items)
    p = np.exp(np.asarray(scorer.next_text_logprobs(ab + ba, list(answers)), np.float64))
    p_ab, p_ba = p[:n], p[n:]
    chosen = p_ab[:, 0] + p_ba[:, 1]
    rejected = p_ab[:, 1] + p_ba[:, 0]
    correct = chosen >= rejected
    by_type = defaultdict(list)
    for item, c in zip(items, correct):
        by_type[item.type].append(c)
    return {"benchmark": "static_hhh", "n": n, "accuracy": float(np.mean(correct)),
            "per_type": {t: float(np.mean(v)) for t, v in sorted(by_type.items())},
            "ties": int(np.sum(chosen == rejected)), "prefers_a": float(np.mean(p[:, 0] > p[:, 1])),
            "mean_margin": float(np.mean(chosen - rejected))}


# ---------------------------------------------------------------- TruthfulQA MC1

@dataclasses.dataclass
class MC1Item:
    question: str
    choices: list[str]
    correct: int  # index of the choice labelled 1


def _json_items(path: str) -> list[tuple[str, object]]:
    """(where, parsed object) for a JSON list or a JSONL file, told apart by content (HF
    `Dataset.to_json` writes JSONL even to a .json name)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordError(path, e.lineno, f"malformed JSON: {e}") from e
        return [(f"item {i}", obj) for i, obj in enumerate(items)]
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise RecordError(path, lineno, f"malformed JSON: {e}") from e
    return out


def _mc1_item(obj: object) -> MC1Item:
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object, got {type(obj).__name__}")
    q, targets = obj.get("question"), obj.get("mc1_targets")
    if not isinstance(q, str) or not q.strip():
        raise ValueError("'question' missing or not a non-empty string")
    if not isinstance(targets, dict):
        raise ValueError("'mc1_targets' missing or not an object with 'choices' and 'labels'")
    choices, labels = targets.get("choices"), targets.get("labels")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise ValueError("mc1_targets.choices must be a non-empty list of strings")
    if not isinstance(labels, list) or len(labels) != len(choices) or not all(l in (0, 1) for l in labels):
        raise ValueError(f"mc1_targets.labels must be {len(choices)} values of 0/1, one per choice")
    if sum(labels) != 1:
        raise ValueError(f"mc1_targets.labels must have exactly one 1, got {sum(labels)}")
    return MC1Item(q, choices, labels.index(1))


def read_truthfulqa_mc1(path: str | os.PathLike) -> list[MC1Item]:
    """TruthfulQA multiple_choice items (question, mc1_targets); other keys (mc2_targets) ignored.
    Errors name the file and the item (JSON list) or line (JSONL)."""
    path = os.fspath(path)
    out = []
    for where, obj in _json_items(path):
        try:
            out.append(_mc1_item(obj))
        except ValueError as e:
            raise RecordError(path, None, f"{where}: {e}") from e
    return out


def evaluate_truthfulqa_mc1(items: Sequence[MC1Item], scorer, mode: str, prompt: JudgePrompt,
                            true_text: str = " true") -> dict:
    """mode "true_false": `prompt` has {question}/{answer}; "loglik_*": `prompt` has {question}
    and the choice follows it as the reply (" " + choice)."""
    if mode not in TRUTHFULQA_MODES:
        raise ValueError(f"TruthfulQA mode must be one of {TRUTHFULQA_MODES}, got {mode!r}")
    if not items:
        raise ValueError("no TruthfulQA items")
    if mode == "true_false":
        prompts = [prompt.render(question=it.question, answer=c) for it in items for c in it.choices]
        scores = np.asarray(scorer.next_text_logprobs(prompts, [true_text]), np.float64)[:, 0]
    else:
        prompts = [prompt.render(question=it.question) for it in items for _ in it.choices]
        total, count = scorer.continuation_logprobs(prompts, [chat.continuation(c) for it in items for c in it.choices])
        total, count = np.asarray(total, np.float64), np.asarray(count, np.float64)
        scores = total if mode == "loglik_sum" else total / count
    correct, start = [], 0
    for it in items:  # np.argmax takes the first of tied scores
        k = len(it.choices)
        correct.append(int(np.argmax(scores[start:start + k])) == it.correct)
        start += k
    return {"benchmark": "truthfulqa_mc1", "mode": mode, "n": len(items), "accuracy": float(np.mean(correct)),
            "mean_choices": float(np.mean([len(it.choices) for it in items]))}


# ---------------------------------------------------------------- files

def detect_format(path: str | os.PathLike) -> str:
    """"static_hhh" or "truthfulqa_mc1", from the first item's keys."""
    path = os.fspath(path)
    items = _json_items(path)
    if not items or not isinstance(items[0][1], dict):
        raise RecordError(path, None, "cannot tell the benchmark format: no JSON object items")
    keys = set(items[0][1])
    if "mc1_targets" in keys:
        return "truthfulqa_mc1"
    if {"chosen", "rejected", "type"} <= keys:
        return "static_hhh"
    raise RecordError(path, None, f"cannot tell the benchmark format from keys {sorted(keys)}; "
                                  f"set format to one of {FORMATS}")


def evaluate_file(path: str | os.PathLike, scorer, fmt: str, prompts: dict[str, JudgePrompt],
                  hhh_answers: Sequence[str] = (" A", " B"), truthfulqa_mode: str = "true_false",
                  true_text: str = " true") -> dict:
    """One benchmark file. `prompts`: "static_hhh" -> A/B prompt, "truthfulqa" -> the prompt the
    TruthfulQA mode needs."""
    path = os.fspath(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown format {fmt!r} (expected 'auto' or one of {FORMATS})")
    items = read_static_hhh(path) if fmt == "static_hhh" else read_truthfulqa_mc1(path)
    try:
        if fmt == "static_hhh":
            out = evaluate_static_hhh(items, scorer, prompts["static_hhh"], hhh_answers)
        else:
            out = evaluate_truthfulqa_mc1(items, scorer, truthfulqa_mode, prompts["truthfulqa"], true_text)
    except ValueError as e:  # e.g. an answer string that is not one token: name the file too
        raise InputError(path, str(e)) from e
    return {"file": path, **out}


def format_table(results: Sequence[dict]) -> str:
    rows = [("file", "benchmark", "n", "accuracy")]
    for r in results:
        name = r["benchmark"] + (f" ({r['mode']})" if "mode" in r else "")
        rows.append((Path(r["file"]).name, name, str(r["n"]), f"{r['accuracy']:.3f}"))
        for t, a in r.get("per_type", {}).items():
            rows.append(("", f"  {t}", "", f"{a:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
