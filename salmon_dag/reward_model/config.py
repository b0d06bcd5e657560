"""The reward model's section of a profile (``reward_model``) and its human-pair sources."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.benchmarks.config import BenchmarkSource
from salmon_dag.config_base import _Strict
from salmon_dag.templates import ReviewerLayout
from salmon_dag.training.config import TrainingConfig


# reward_model_eval's metrics of agreement with human labels: under the Harmless principle, and
# ".../principle_free"
AGREEMENT_METRIC = "hh_harmless_agreement"
# the per-pair length column the length-grouped sampler reads (RewardModelConfig.group_by_length)
LENGTH_COLUMN = "length"

class HumanPairsConfig(_Strict):
    """Human preference pairs: a local .jsonl / .jsonl.gz file, or a Hub id / dataset folder read
    with ``datasets``. ``format``: HH-RLHF's (``{"chosen": dialogue, "rejected": dialogue}``) or
    SHP's (``history``, ``human_ref_A`` / ``human_ref_B``, ``labels``: 1 when A is preferred,
    ``score_A`` / ``score_B``); ``score_ratio_above`` keeps only SHP pairs whose higher score is more
    than that many times the lower (SALMON's PMP: 2)."""

    source: str
    split: str = "train"
    format: Literal["hh_rlhf", "shp"] = "hh_rlhf"
    score_ratio_above: float | None = Field(default=None, ge=1)
    max_pairs: int | None = Field(default=None, gt=0)
    # a missing local file skips what needs it (PMP, human agreement) instead of failing
    optional: bool = False
    _HASH_NEUTRAL_WHEN_DEFAULT = ("format", "score_ratio_above")

    @model_validator(mode="after")
    def _ratio_is_shps(self) -> "HumanPairsConfig":
        if self.score_ratio_above is not None and self.format != "shp":
            raise ValueError("score_ratio_above applies to format 'shp' only")
        return self


class PMPConfig(_Strict):
    """Preference-model pre-training on human pairs with a principle-free prompt, before the
    principle fine-tune (SALMON: HH-RLHF + SHP, lr 5e-5, 1 epoch)."""

    # None: a fixed share of reward_model.human_eval's pairs, disjoint from the evaluated ones
    data: HumanPairsConfig | None = None
    # more sources whose pairs PMP trains on too (SALMON: SHP beside HH-RLHF)
    more_data: list[HumanPairsConfig] = []
    _HASH_NEUTRAL_WHEN_DEFAULT = ("more_data",)
    share: float = Field(default=0.5, gt=0, lt=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    epochs: float = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    # None: the reward model's own (SALMON's PMP: 1024 tokens and 1% warm-up, against the
    # principle fine-tune's 1280 and 3%)
    max_seq_len: int | None = Field(default=None, gt=0)
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)


class RewardModelConfig(TrainingConfig):
    """The instructable reward model (``profile.reward_model``)."""

    # share of response pairs held out (all their rm_training_data examples) for evaluation
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    # "merged": a whole model (LoRA merged in); "adapter": PEFT adapter + head (big models)
    save: Literal["merged", "adapter"] = "merged"
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    center_rewards_coefficient: float | None = Field(default=None, ge=0)
    # CPU training precision; "auto" = bf16 autocast where the CPU computes bf16 natively
    cpu_precision: Literal["auto", "float32"] = "auto"
    eval_batch_size: int = Field(default=32, gt=0)
    # held-out accuracy is also measured during training at every checkpoint (the reward_model
    # asset's curve); off, only reward_model_eval measures it, once, after training
    eval_during_training: bool = True
    # human-labelled pairs for hh_harmless_agreement (and, with pmp set, PMP)
    human_eval: HumanPairsConfig | None = None
    human_eval_max_pairs: int = Field(default=512, gt=0)
    pmp: PMPConfig | None = None
    # asset check on reward_model_eval: this many principles reach the threshold in both directions
    probe_threshold: float = Field(default=0.8, ge=0, le=1)
    probe_min_principles: int = Field(default=2, ge=0)
    # hand-written (principle, prompt, chosen, rejected) pairs probed both ways (pairs/... metrics)
    principle_pairs: str | None = None
    # the reviewer prompt in words ("standard") or with only its labels ("compact": the tiny
    # profile's RM learns its principles from fewer tokens; templates.reward_prompt_parts)
    reviewer_layout: ReviewerLayout = "standard"
    # batches of pairs of similar length (transformers' LengthGroupedSampler): a batch pads its 2 x
    # batch prompts to the longest, so this spends less compute on padding per step
    group_by_length: bool = False
    _HASH_NEUTRAL_WHEN_DEFAULT = ("reviewer_layout", "group_by_length")

    def trl_config(self, work_dir: Path, seed: int, device: str, n_examples: int, save_steps: int | None = None,
                   heldout: bool = False):
        """TRL's ``RewardConfig`` for this section: the arguments every trainer here shares
        (``training.harness.common_training_args``) and the reward model's own; evaluation on the
        held-out pairs at every checkpoint when there are any (``heldout``) and
        ``eval_during_training`` is on."""
        from trl import RewardConfig

        from salmon_dag.training.harness import common_training_args
        from salmon_dag.training.precision import use_bf16_autocast

        args = common_training_args(self, work_dir, seed, device, n_examples, save_steps)
        eval_steps = max(1, args["save_steps"]) if heldout and self.eval_during_training else None
        args.update(
            max_length=None,  # encode_review already fits every prompt to max_seq_len
            disable_dropout=True,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup_ratio,
            center_rewards_coefficient=self.center_rewards_coefficient,
            per_device_eval_batch_size=self.per_device_batch_size * 2,
            eval_strategy="steps" if eval_steps else "no",
            eval_steps=eval_steps,
            bf16=args["bf16"] or (device == "cpu" and use_bf16_autocast(self.cpu_precision)),
        )
        if self.group_by_length:
            # the sampler reads the "length" column (train.with_pair_lengths), which the trainer
            # would otherwise drop before sampling; TRL's collator ignores it
            args.update(train_sampling_strategy="group_by_length", length_column_name=LENGTH_COLUMN,
                        remove_unused_columns=False)
        return RewardConfig(**args)


class RMBenchmarksConfig(_Strict):
    """``rm_benchmarks``: comparison files the reward model is measured on, and other reward models
    measured on the same files."""

    # name -> a file of comparisons (RewardBench's format); a local file, bundled:<name>, an
    # hf://datasets/... file or a Hub dataset id with its split (RewardBench: allenai/reward-bench,
    # split filtered)
    files: dict[str, BenchmarkSource] = {}
    # principle names of reward_model.yaml for rows that name none (RewardBench's rows name none)
    principles: list[str] = []
    # other reward models, scored on the same files without principles
    compare: list[str] = []
    # rows per file (None: all)
    limit: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=16, gt=0)
    # what a compared model sees at most (our reward model keeps its own max_seq_len)
    compare_max_len: int = Field(default=2048, gt=0)
