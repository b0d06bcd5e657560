"""The judging stage's section of a profile (``judge``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from salmon_dag.config_base import _Strict


class JudgeConfig(_Strict):
    """Principle-driven synthetic preferences (SALMON §1.2)."""

    # judge model: "sft_model" (the SFT policy, paper default), "base_model", or a Hub id / path
    model: str = "sft_model"
    max_pairs: int | None = Field(default=None, gt=0)
    # when the two orders disagree in sign: "zero" (SALMON: the judgement does not count) or
    # "mean" (keep the mean of both orders, which cancels a judge's bias towards one letter)
    inconsistent: Literal["zero", "mean"] = "zero"
    # judge only these principles of reward_model.yaml (all when unset): a judge without signal
    # (tiny) need not judge principles that aggregation never samples
    principles: list[str] | None = Field(default=None, min_length=1)
    # pairs per judge call: enough for full engine batches; each finished call is saved, so a
    # killed run redoes at most one (salmon_dag.resume)
    chunk_pairs: int = Field(default=128, gt=0)

    _HASH_NEUTRAL_WHEN_DEFAULT = ("chunk_pairs",)
