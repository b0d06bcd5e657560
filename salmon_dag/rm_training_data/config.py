"""The reward-model examples stage's section of a profile (``aggregation``):
SALMON's aggregation of judgements into examples (``salmon_dag.aggregation``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import _Strict


class AggregationConfig(_Strict):
    """Turning judgements into reward-model training examples (SALMON §1.3; defaults = the paper's)."""

    passes: int = Field(default=4, gt=0)
    # subset size ~ geometric(subset_p) truncated to [1, max_principles]
    subset_p: float = Field(default=0.2, gt=0, le=1)
    max_principles: int = Field(default=8, gt=0)
    negation_prob: float = Field(default=0.5, ge=0, le=1)
    # SALMON negates each sampled principle independently (False). True: pass 2m+1 repeats pass
    # 2m's subsets with every negation flipped (and fresh order and noise), so each (pair,
    # principle) is shown as often negated as not and no feature of the replies alone lowers the
    # loss: only reading the principle does. Needs negation_prob 0.5, the same marginal rate; with
    # an odd number of passes the last one is drawn unpaired.
    paired_negation: bool = False
    label_noise: float = Field(default=0.1, ge=0, lt=0.5)
    rule_label_noise: float = Field(default=0.25, ge=0, lt=0.5)
    # principles that are judged (synthetic_preferences) but never sampled for a training
    # example (the public SALMON run judges 11 principles and aggregates 8)
    exclude_principles: list[str] = []
    # when set, only these principles are sampled (exclude_principles still applies)
    include_principles: list[str] | None = None
    # Where verifiable rules act. "principle": a rule counts only when its principle is in the
    # example's subset and flips with negation (an instructable RM then learns to follow the
    # rule's principle in both directions). "global" (the public SALMON code): language and
    # single-response rules act on every example, never negated; comparative rules are not used.
    rule_scope: Literal["principle", "global"] = "principle"
    # principle scope: how a sampled principle's rule combines with the model judgement
    rule_mode: Literal["override", "blend", "off"] = "override"
    rule_weight: float = Field(default=1.0, ge=0)
    # principle scope, override: draw from every judged principle ("judge", SALMON: an example no
    # sampled rule decides takes the judge's label) or only from those whose rule decides the pair
    # ("drop": for a judge whose verdicts carry no signal, as tiny's; undecided pairs give nothing)
    undecided: Literal["judge", "drop"] = "judge"
    # with undecided "drop": an example lists one principle whose rule decides its pair and, up to
    # its drawn subset size, principles whose rule ties on it (both responses pass or both fail:
    # score 0, as a principle that barely separates a pair in SALMON's subsets), in random order;
    # the label is the deciding one's. Off: only deciding principles are listed.
    undecided_neutral: bool = False
    # draw principles inversely to how many pairs each is available on (SALMON: uniform)
    balance_principles: bool = False
    # global scope: probability that a decisive single-response rule (e.g. the boilerplate
    # phrase) overrides the label; the language rule always does
    global_rule_prob: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _paired_negation_is_half(self) -> "AggregationConfig":
        if self.paired_negation and self.negation_prob != 0.5:
            raise ValueError(f"aggregation.paired_negation needs negation_prob 0.5 (it negates half of"
                             f" the examples by construction), got {self.negation_prob}")
        return self
