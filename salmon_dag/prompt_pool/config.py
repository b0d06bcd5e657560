"""The prompt pool's section of a profile (``prompt_pool``): its sources and cleaning thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import QuestionType, _Strict

PromptFormat = Literal[
    "plain", "oasst1", "dolly", "sharegpt", "openorca", "math", "self_instruct", "gsm8k", "hh_rlhf"
]


class PromptSource(_Strict):
    """One origin of user prompts.

    ``type`` picks the reader (``bundled`` = the project's default prompts, local ``jsonl`` /
    ``parquet`` / ``csv`` files, or ``hf`` = ``datasets.load_dataset(path)`` which accepts a Hub id
    or a local directory); ``format`` picks how a record becomes a prompt.
    """

    type: Literal["bundled", "jsonl", "parquet", "csv", "hf"]
    path: str | None = None
    name: str | None = None
    format: PromptFormat = "plain"
    text_field: str = "prompt"
    type_field: str | None = None
    question_type: QuestionType | None = None
    split: str = "train"
    subset: str | None = None
    limit: int | None = Field(default=None, gt=0)
    optional: bool = False

    @model_validator(mode="after")
    def _path_needed(self) -> "PromptSource":
        if self.type != "bundled" and not self.path:
            raise ValueError(f"a '{self.type}' source needs 'path'")
        return self

    @property
    def label(self) -> str:
        return self.name or (self.type if self.type == "bundled" else f"{self.type}:{self.path}")


class PromptPoolConfig(_Strict):
    sources: list[PromptSource] = Field(min_length=1)
    min_chars: int = Field(default=3, ge=1)
    max_chars: int = Field(default=2000, gt=0)
    near_duplicate_threshold: float = Field(default=0.7, gt=0, le=1)
    minhash_num_perm: int = Field(default=128, ge=16)
    allowed_languages: list[str] | None = None
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
