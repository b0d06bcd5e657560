"""The response-pairs stage's section of a profile (``pairs``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import _Strict


class PairsConfig(_Strict):
    """Sampling two SFT-policy responses per prompt (SALMON: temperature 0.7, top_p 1.0, up to
    768 new tokens; a pair is dropped when an output is under 16 characters)."""

    max_prompts: int | None = Field(default=None, gt=0)
    max_new_tokens: int = Field(default=768, gt=0)
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    # a pair is dropped when either response is under min_chars characters or min_words words
    min_chars: int = Field(default=16, ge=1)
    min_words: int = Field(default=1, ge=1)
    # completions sampled per prompt; the pair is the first two long enough and different
    # (SALMON samples 2; more spares prompts whose samples are often too short)
    candidates: int = Field(default=2, ge=2)
    # which two candidates make the pair: "first" (the first two usable, SALMON's random pair) or
    # "rule_contrast" (the two that the most verifiable rules of the judged principles tell apart,
    # single-response rules first: a habit the policy shows in a few percent of its samples still
    # reaches the judge as a contrast; pairs are then no longer a random draw)
    select: Literal["first", "rule_contrast"] = "first"
    # pairs made from one prompt's candidates, each candidate in one pair at most (SALMON: 1).
    # More pairs from the same samples cost no generation: the judge and the reward model get
    # more distinct replies, and the held-out probes more pairs to measure on
    pairs_per_prompt: int = Field(default=1, ge=1)
    _HASH_NEUTRAL_WHEN_DEFAULT = ("pairs_per_prompt",)

    @model_validator(mode="after")
    def _enough_candidates(self) -> "PairsConfig":
        if self.candidates < 2 * self.pairs_per_prompt:
            raise ValueError(f"pairs_per_prompt {self.pairs_per_prompt} needs candidates >= "
                             f"{2 * self.pairs_per_prompt} (each candidate is in one pair at most), got {self.candidates}")
        return self
