"""What every section of a profile is built from: strict, frozen pydantic models, the one-line
error a bad profile raises, and the question types prompts are classified into."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

QuestionType = Literal["general", "reasoning", "red_teaming"]
QUESTION_TYPES: tuple[str, ...] = ("general", "reasoning", "red_teaming")


class ProfileError(ValueError):
    """A profile could not be found, parsed or validated (message is one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
