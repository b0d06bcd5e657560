"""What every section of a profile is built from: strict, frozen pydantic models, the one-line
error a bad profile raises, and the question types prompts are classified into."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_serializer

QuestionType = Literal["general", "reasoning", "red_teaming"]
QUESTION_TYPES: tuple[str, ...] = ("general", "reasoning", "red_teaming")


class ProfileError(ValueError):
    """A profile could not be found, parsed or validated (message is one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Fields added after warehouses were built, left out of the dumped section (and so of its
    # config hash) while they hold their default: a new option does not make every existing
    # warehouse rebuild what reads the section; set, it counts like any other field.
    _HASH_NEUTRAL_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._HASH_NEUTRAL_WHEN_DEFAULT:
                if name in data and getattr(self, name) == type(self).model_fields[name].get_default(call_default_factory=True):
                    del data[name]
        return data
