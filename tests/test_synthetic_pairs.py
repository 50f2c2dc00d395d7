"""Pair construction, the heuristic length filter and the BAD rules, on hand-made queries."""
import math

import numpy as np
import pytest

from almost_jax.synthetic.pairs import PairStats, build_pairs, long_enough, rank_of
from almost_jax.synthetic.rules import (BAD, QueryRules, ResponseRules, bad_query_reason, bad_response_reason,
                                        parse_query, parse_response)

RUBRIC = ["L-faith-3", "M-faith-3", "S-plain-3", "S-plain-1"]


def pairs_of(responses, rubric=RUBRIC, **kw):
    return [(p.chosen_setup, p.rejected_setup) for p in build_pairs(responses, rubric, **kw)]


def test_each_setup_chosen_once_paired_with_best_lower_survivor():
    r = {"L-faith-3": "a" * 40, "M-faith-3": "b" * 40, "S-plain-3": "c" * 40, "S-plain-1": "d" * 40}
    assert pairs_of(r) == [("L-faith-3", "M-faith-3"), ("M-faith-3", "S-plain-3"), ("S-plain-3", "S-plain-1")]


def test_bad_responses_are_skipped_and_next_survivor_used():
    r = {"L-faith-3": "a" * 40, "M-faith-3": None, "S-plain-3": "c" * 40, "S-plain-1": ""}
    assert pairs_of(r) == [("L-faith-3", "S-plain-3")]


def test_fewer_than_two_survivors_gives_no_pair():
    stats = PairStats()
    assert build_pairs({"L-faith-3": "x" * 10, "M-faith-3": None}, RUBRIC, stats=stats) == []
    assert stats.queries_lt2_survivors == 1


def test_length_filter_hand_computed():
    # lengths 10, 100, 100, 100 -> mean 77.5, std 38.97, threshold 58.01: L (10) is too short
    r = {"L-faith-3": "a" * 10, "M-faith-3": "b" * 100, "S-plain-3": "c" * 100, "S-plain-1": "d" * 100}
    ok = long_enough(r)
    assert ok == {"L-faith-3": False, "M-faith-3": True, "S-plain-3": True, "S-plain-1": True}
    lengths = np.array([10, 100, 100, 100])
    assert math.isclose(lengths.mean() - lengths.std() / 2, 58.0139, rel_tol=1e-4)
    stats = PairStats()
    # L is shorter than everything and not long enough: every (L, x) pair is filtered, L never chosen.
    assert pairs_of(r, stats=stats) == [("M-faith-3", "S-plain-3"), ("S-plain-3", "S-plain-1")]
    # Without the filter L is chosen against M.
    assert pairs_of(r, length_filter=False)[0] == ("L-faith-3", "M-faith-3")


def test_short_but_longer_than_rejected_is_kept():
    # L is below the threshold but longer than the S-plain-1 response: (L, S-plain-1) passes.
    r = {"L-faith-3": "a" * 20, "M-faith-3": "b" * 100, "S-plain-3": "c" * 100, "S-plain-1": "d" * 5}
    assert pairs_of(r) == [("L-faith-3", "S-plain-1"), ("M-faith-3", "S-plain-3"), ("S-plain-3", "S-plain-1")]


def test_bad_responses_do_not_count_in_length_statistics():
    ok = long_enough({"a": "x" * 10, "b": None, "c": "x" * 10})
    assert ok == {"a": True, "b": False, "c": True}


def test_tie_groups_never_paired_and_rank_used_once():
    rubric = [["L-a", "L-b"], "S"]
    r = {"L-a": "x" * 30, "L-b": "y" * 30, "S": "z" * 30}
    stats = PairStats()
    assert pairs_of(r, rubric, stats=stats) == [("L-a", "S")]
    assert stats.skipped_ties == 1
    assert rank_of(rubric) == {"L-a": 0, "L-b": 0, "S": 1}
    with pytest.raises(ValueError, match="twice"):
        rank_of(["a", ["a", "b"]])
    with pytest.raises(ValueError, match="not in the rubric"):
        build_pairs({"zzz": "x", "S": "y"}, rubric)


@pytest.mark.parametrize("text,reason", [
    ("Sure. " * 9 + "Sure.", None),
    ("Sure. " * 10, "no_terminal_punctuation"),  # trailing space: last char is not . or !
    ("short.", "too_short"),
    ("Is this a question that is long enough to pass the length rule?", "ends_with_question_or_colon"),
    ("Here is a list of the things that you need for the recipe:", "ends_with_question_or_colon"),
    ("Well, this response is long enough to pass the length check.", "starts_with_well"),
    ("This response is long enough to pass but has no final stop", "no_terminal_punctuation"),
    ("I really don't know the answer to that, sorry about it.", "dont_know"),
    ("I do not  know the answer to that one, sorry about that!", "dont_know"),
    ("Sure, here it is. human: and now I continue the dialogue.", "contains_human_tag"),
    ("Here is the picture you asked for <image> and some words.", "contains_image_tag"),
    (BAD, "empty"),
    ("", "empty"),
])
def test_bad_response_rules(text, reason):
    assert bad_response_reason(text, ResponseRules()) == reason


def test_mini_world_rules_accept_short_answers():
    rules = ResponseRules(min_chars=1, require_terminal_punct=False, reject_question_or_colon_end=False)
    assert bad_response_reason("7", rules) is None


def test_parse_response_and_query():
    assert parse_response(" Paris is nice.\n\nHuman: next\n\nAssistant: x") == "Paris is nice."
    assert parse_response(" Sure.\n\n-----\n\nHuman: q") == "Sure."
    assert parse_query(" How do I bake bread?\nQuery: another") == "another"
    assert parse_query("no prefix anywhere") == ""
    assert parse_query("noise\nQuery: How do I bake bread? query: more") == "How do I bake bread?"
    rules = QueryRules()
    assert bad_query_reason("too short", rules) == "too_short_unterminated"
    assert bad_query_reason("short?", rules) is None
    assert bad_query_reason("x" * 300, rules) == "too_long"
    assert bad_query_reason("x" * 300 + ".", rules) is None
    assert bad_query_reason("x" * 300 + ".", QueryRules(long_query_rule="repo")) == "too_long"
    assert bad_query_reason("Query: nested prefix here please?", rules) == "contains_prefix"
