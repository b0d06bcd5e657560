"""Verifiable rules: the public code's two hard-coded rules are expressible and checkable."""

import pytest
from pydantic import TypeAdapter, ValidationError

from salmon_dag.rules import Rule, check_rule, detect_language

parse = TypeAdapter(Rule).validate_python


def test_forbidden_phrase_case_insensitive():
    rule = parse({"type": "forbidden_phrase", "phrases": ["As an AI language model"]})
    assert not check_rule(rule, "q", "as an ai language model, I cannot say.")
    assert check_rule(rule, "q", "Paris is the capital of France.")


def test_language_match():
    rule = parse({"type": "language_match"})
    q = "Quelle est la meilleure façon d'apprendre une nouvelle langue rapidement ?"
    assert check_rule(rule, q, "La meilleure façon est de pratiquer tous les jours avec des locuteurs natifs.")
    assert not check_rule(rule, q, "The best way is to practise every day with native speakers.")
    assert detect_language("1234 !!") == "und"


def test_length_bounds():
    rule = parse({"type": "length", "min_words": 2, "max_words": 4})
    assert check_rule(rule, "q", "two words")
    assert not check_rule(rule, "q", "one")
    assert not check_rule(rule, "q", "this has five words here")


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "forbidden_phrase", "phrases": []},
        {"type": "length"},
        {"type": "length", "min_words": 5, "max_words": 2},
        {"type": "regex", "pattern": "x"},
        {"type": "language_match", "extra": 1},
    ],
)
def test_invalid_rules_rejected(bad):
    with pytest.raises(ValidationError):
        parse(bad)
