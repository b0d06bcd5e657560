"""Verifiable rules: the public code's two hard-coded rules are expressible and checkable."""

import pytest
from pydantic import TypeAdapter, ValidationError

from salmon_dag.rules import Rule, check_rule, compare_rule, detect_language

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
    # broken only where both languages are detected with confidence: the detector's top label on
    # garbled text (a tiny model's) or a short English answer is a guess, no verdict
    en = "How do I keep basil fresh for longer after buying it at the market?"
    assert not check_rule(rule, en, "Guarda la albahaca en un vaso con agua fuera de la nevera, como un ramo de flores.")
    assert check_rule(rule, en, "To boil an egg, put it in water for six minutes.")  # py3langid: "pcm", 0.5
    assert check_rule(rule, en, "Téora überassers pour c Tey,z La Vtny et su'ktgcor einge génacorasß.")
    # at confidence 0 any top label is a verdict, as before
    assert not check_rule(parse({"type": "language_match", "min_confidence": 0.0}), en, "Téora überassers pour c Tey,z.")


def test_length_bounds():
    rule = parse({"type": "length", "min_words": 2, "max_words": 4})
    assert check_rule(rule, "q", "two words")
    assert not check_rule(rule, "q", "one")
    assert not check_rule(rule, "q", "this has five words here")


def test_comparative_length_prefers_shorter_or_longer_beyond_a_margin():
    short, long_ = "one two three four five six seven eight", "one two three four five six seven eight nine ten"
    shorter = parse({"type": "length", "prefer": "shorter", "min_relative_difference": 0.2})
    longer = parse({"type": "length", "prefer": "longer", "min_relative_difference": 0.2})
    assert compare_rule(shorter, "q", short, long_) == (True, False)  # 8 vs 10 words: 20% apart
    assert compare_rule(shorter, "q", long_, short) == (False, True)
    assert compare_rule(longer, "q", short, long_) == (False, True)
    nine = "one two three four five six seven eight nine"
    assert compare_rule(shorter, "q", nine, long_) == (False, False)  # 10% apart: a tie
    assert compare_rule(longer, "q", short, short + " ") == (False, False)  # same length
    # default margin 0.2; margin 0 separates any two different lengths
    assert compare_rule(parse({"type": "length", "prefer": "shorter"}), "q", nine, long_) == (False, False)
    assert compare_rule(parse({"type": "length", "prefer": "shorter", "min_relative_difference": 0}), "q",
                        nine, long_) == (True, False)
    # single-response rules compare by checking each response
    bound = parse({"type": "length", "max_words": 9})
    assert compare_rule(bound, "q", nine, long_) == (True, False)
    with pytest.raises(ValueError, match="compares two responses"):
        check_rule(shorter, "q", short)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "forbidden_phrase", "phrases": []},
        {"type": "length"},
        {"type": "length", "min_words": 5, "max_words": 2},
        {"type": "length", "prefer": "shorter", "max_words": 10},
        {"type": "length", "min_words": 3, "min_relative_difference": 0.2},
        {"type": "length", "prefer": "shortest"},
        {"type": "length", "prefer": "longer", "min_relative_difference": 1.5},
        {"type": "regex", "pattern": "x"},
        {"type": "language_match", "extra": 1},
        {"type": "language_match", "min_confidence": 1.5},
    ],
)
def test_invalid_rules_rejected(bad):
    with pytest.raises(ValidationError):
        parse(bad)
