"""Verifiable rules: principle checks that need no model.

A principle may carry a ``rule``; later stages evaluate it on a pair of responses and store the
verdict beside the model judgement. This generalises the public SALMON code's two hard-coded rules
(penalise "As an AI language model" boilerplate; prefer the answer in the instruction's language)
and adds rules that *compare* the two responses (``length`` with ``prefer: shorter | longer``),
which give a principle such as conciseness a decisive verdict on most pairs, where an absolute
word bound rarely separates two answers.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ForbiddenPhraseRule(_Rule):
    """Satisfied when none of ``phrases`` occurs in the response (case-insensitive)."""

    type: Literal["forbidden_phrase"]
    phrases: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class LanguageMatchRule(_Rule):
    """Satisfied unless the response is, with confidence, in another language than the instruction:
    broken only when both texts' languages are detected with a probability of at least
    ``min_confidence`` and differ. A detector's top label on short or garbled text is a guess
    (py3langid gives "pcm" at 0.50 for "To boil an egg, put it in water for six minutes."): as a
    verdict it would penalise an answer in the user's language about as often as a real slip."""

    type: Literal["language_match"]
    min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)


class LengthRule(_Rule):
    """Word-count rule, absolute or comparative.

    Absolute (``min_words`` / ``max_words``): a response satisfies it when its word count lies in
    the bounds. Comparative (``prefer: shorter | longer``): of two responses, the shorter (longer)
    one satisfies it, provided their word counts differ by at least ``min_relative_difference`` of
    the longer one's; otherwise neither does (a tie).
    """

    type: Literal["length"]
    min_words: int | None = Field(default=None, gt=0)
    max_words: int | None = Field(default=None, gt=0)
    prefer: Literal["shorter", "longer"] | None = None
    min_relative_difference: float | None = Field(default=None, ge=0, lt=1)

    @model_validator(mode="after")
    def _bounds(self) -> "LengthRule":
        absolute = self.min_words is not None or self.max_words is not None
        if self.prefer is not None and absolute:
            raise ValueError("a length rule is absolute (min_words/max_words) or comparative (prefer), not both")
        if self.prefer is None and not absolute:
            raise ValueError("a length rule needs min_words and/or max_words, or prefer: shorter | longer")
        if self.prefer is None and self.min_relative_difference is not None:
            raise ValueError("min_relative_difference needs prefer: shorter | longer")
        if self.min_words and self.max_words and self.min_words > self.max_words:
            raise ValueError("min_words is larger than max_words")
        return self

    @property
    def comparative(self) -> bool:
        return self.prefer is not None


Rule = Annotated[
    Union[ForbiddenPhraseRule, LanguageMatchRule, LengthRule], Field(discriminator="type")
]

_WORD = re.compile(r"\w+", re.UNICODE)


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text`` by py3langid (offline); ``und`` for text without letters."""
    if not any(ch.isalpha() for ch in text):
        return "und"
    import py3langid  # lazy: its model loads on first use

    return py3langid.classify(text)[0]


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_with_confidence(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of ``text`` by py3langid with normalised probabilities;
    (``und``, 0.0) for text without letters."""
    if not any(ch.isalpha() for ch in text):
        return "und", 0.0
    lang, prob = _identifier().classify(text)
    return lang, float(prob)


def in_other_language(instruction: str, response: str, min_confidence: float) -> bool:
    """True when both texts' languages are detected with at least ``min_confidence`` and differ."""
    li, pi = language_with_confidence(instruction)
    if pi < min_confidence:
        return False
    lr, pr = language_with_confidence(response)
    return pr >= min_confidence and lr != li


AnyRule = ForbiddenPhraseRule | LanguageMatchRule | LengthRule
# default share of the longer answer by which two lengths must differ for a comparative verdict
DEFAULT_MIN_RELATIVE_DIFFERENCE = 0.2


def is_comparative(rule: AnyRule | None) -> bool:
    """True for rules whose verdict needs both responses (``length`` with ``prefer``)."""
    return isinstance(rule, LengthRule) and rule.comparative


def check_rule(rule: AnyRule, instruction: str, response: str) -> bool:
    """True when ``response`` satisfies the single-response ``rule`` for ``instruction``."""
    if is_comparative(rule):
        raise ValueError(f"rule {rule.model_dump(exclude_none=True)} compares two responses: use compare_rule")
    if isinstance(rule, ForbiddenPhraseRule):
        low = response.lower()
        return not any(p.lower() in low for p in rule.phrases)
    if isinstance(rule, LanguageMatchRule):
        return not in_other_language(instruction, response, rule.min_confidence)
    if isinstance(rule, LengthRule):
        n = word_count(response)
        return (rule.min_words is None or n >= rule.min_words) and (
            rule.max_words is None or n <= rule.max_words
        )
    raise TypeError(f"unknown rule {rule!r}")


def compare_rule(rule: AnyRule, instruction: str, a: str, b: str) -> tuple[bool, bool]:
    """(a satisfies ``rule``, b satisfies ``rule``) for two responses to ``instruction``.

    Single-response rules check each response on its own; a comparative length rule marks the
    preferred one of the two (neither when their lengths are too close)."""
    if not is_comparative(rule):
        return check_rule(rule, instruction, a), check_rule(rule, instruction, b)
    wa, wb = word_count(a), word_count(b)
    margin = DEFAULT_MIN_RELATIVE_DIFFERENCE if rule.min_relative_difference is None else rule.min_relative_difference
    if wa == wb or abs(wa - wb) < margin * max(wa, wb):
        return False, False
    a_shorter = wa < wb
    return (a_shorter, not a_shorter) if rule.prefer == "shorter" else (not a_shorter, a_shorter)
