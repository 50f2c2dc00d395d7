"""Rules that discard generated text before it becomes training data.

Response rules follow the official ALMoST code (`check_bad` of its response generator); query
rules follow its self-instruct query generator. Each rule is a config value, because the
thresholds that suit LLaMA answers (>= 50 characters, full sentences) do not suit a toy world
whose correct answers are "7" or "1 2 4 7".
"""
from __future__ import annotations

import dataclasses
import re
import string
from typing import Optional

BAD = "BAD"
_DONT_KNOW = re.compile(r"(don('|\u2019)t|do not)\s+know", re.IGNORECASE)
_HUMAN_TAG = re.compile(r"Human[:]", re.IGNORECASE)
_IMAGE_TAG = re.compile(r"[<]Image[>]", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ResponseRules:
    min_chars: int = 50
    reject_question_or_colon_end: bool = True
    reject_well_start: bool = True
    require_terminal_punct: bool = True  # last character must be "." or "!"
    reject_dont_know: bool = True
    reject_human_tag: bool = True
    reject_image_tag: bool = True

    @classmethod
    def from_config(cls, cfg) -> "ResponseRules":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(cfg).items() if k in fields})


def bad_response_reason(response: str, rules: ResponseRules) -> Optional[str]:
    """The name of the first rule the response breaks, or None if it is usable."""
    if response == BAD or not response.strip():
        return "empty"
    if len(response) < rules.min_chars:
        return "too_short"
    if rules.reject_question_or_colon_end and response.endswith(("?", ":")):
        return "ends_with_question_or_colon"
    if rules.reject_well_start and response.lower().startswith("well"):
        return "starts_with_well"
    if rules.require_terminal_punct and response[-1] not in ".!":
        return "no_terminal_punctuation"
    if rules.reject_dont_know and _DONT_KNOW.search(response):
        return "dont_know"
    if rules.reject_human_tag and _HUMAN_TAG.search(response):
        return "contains_human_tag"
    if rules.reject_image_tag and _IMAGE_TAG.search(response):
        return "contains_image_tag"
    return None


def parse_response(generated: str, separator: str = "\n\n-----", turn: int = 0) -> str:
    """The assistant's reply inside a sampled continuation: stop at the dialogue separator, take the
    `turn`-th "Assistant:" segment, stop at the next "Human:"."""
    text = generated.split(separator)[0]
    parts = text.split("Assistant:")
    if turn >= len(parts):
        return BAD
    return parts[turn].split("Human:")[0].strip("\n ")


# ----- queries (self-instruct) -----

@dataclasses.dataclass(frozen=True)
class QueryRules:
    min_chars: int = 30
    max_chars: int = 250
    # The official code drops long queries that END in punctuation (a double negation); "intent"
    # drops long queries that do NOT, which is what the surrounding code suggests was meant.
    long_query_rule: str = "intent"  # "intent" | "repo"

    @classmethod
    def from_config(cls, cfg) -> "QueryRules":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(cfg).items() if k in fields})


def bad_query_reason(query: str, rules: QueryRules, prefix: str = "Query:") -> Optional[str]:
    if not query.strip():
        return "empty"
    if prefix and prefix in query:
        return "contains_prefix"
    ends_punct = query[-1] in string.punctuation
    if len(query) < rules.min_chars and not ends_punct:
        return "too_short_unterminated"
    if len(query) > rules.max_chars:
        if (rules.long_query_rule == "intent" and not ends_punct) or (rules.long_query_rule == "repo" and ends_punct):
            return "too_long"
    return None


_QUERY_SPLIT = re.compile(r"query\s?[:]", re.IGNORECASE)


def parse_query(generated: str, prefix: str = "Query:") -> str:
    """The first line starting with the prefix, cut at any further "query:"; "" when none."""
    for line in generated.split("\n"):
        if line.strip().startswith(prefix):
            text = line.replace(prefix, "").strip()
            return _QUERY_SPLIT.split(text)[0].strip("\n ")
    return ""
