"""The Self-Align data stage's section of a profile (``self_align``)."""

from __future__ import annotations

from pydantic import Field

from salmon_dag.config_base import _Strict


class SelfAlignConfig(_Strict):
    """Generation and filtering of the base model's principle-driven answers (Dromedary)."""

    max_prompts: int | None = Field(default=None, gt=0)
    max_new_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    min_words: int = Field(default=3, ge=1)
    max_words: int = Field(default=400, gt=0)
    min_distinct_trigram_ratio: float = Field(default=0.5, ge=0, le=1)
    # keep answers that hit max_new_tokens without a stop (off: they are cut mid-thought)
    keep_truncated: bool = False
    # asset check: at most this share of answers may be filtered out
    max_filtered_share: float = Field(default=0.5, ge=0, le=1)
