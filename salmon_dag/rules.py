"""Verifiable rules: principle checks that need no model.

A principle may carry a ``rule``; later stages evaluate it on each response and store the verdict
beside the model judgement. This generalises the public SALMON code's two hard-coded rules
(penalise "As an AI language model" boilerplate; prefer the answer in the instruction's language).
"""

from __future__ import annotations

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
    """Satisfied when the response is in the same language as the instruction."""

    type: Literal["language_match"]


class LengthRule(_Rule):
    """Satisfied when the response's word count lies within [min_words, max_words]."""

    type: Literal["length"]
    min_words: int | None = Field(default=None, gt=0)
    max_words: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> "LengthRule":
        if self.min_words is None and self.max_words is None:
            raise ValueError("a length rule needs min_words and/or max_words")
        if self.min_words and self.max_words and self.min_words > self.max_words:
            raise ValueError("min_words is larger than max_words")
        return self


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


def check_rule(rule: ForbiddenPhraseRule | LanguageMatchRule | LengthRule, instruction: str, response: str) -> bool:
    """True when ``response`` satisfies ``rule`` for ``instruction``."""
    if isinstance(rule, ForbiddenPhraseRule):
        low = response.lower()
        return not any(p.lower() in low for p in rule.phrases)
    if isinstance(rule, LanguageMatchRule):
        return detect_language(instruction) == detect_language(response)
    if isinstance(rule, LengthRule):
        n = word_count(response)
        return (rule.min_words is None or n >= rule.min_words) and (
            rule.max_words is None or n <= rule.max_words
        )
    raise TypeError(f"unknown rule {rule!r}")
