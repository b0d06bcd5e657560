"""The RL stage's sections of a profile: ``rl`` (algorithm, reward, principle draws) and ``ppo``
(the trainer)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import QuestionType, _Strict
from salmon_dag.training.config import TrainingConfig


class RLRewardConfig(_Strict):
    """SALMON's RL reward: the RM score under sampled principles, a length bonus and a penalty
    for answers that never stop. Defaults are the paper's constants."""

    # principles drawn by weight, without replacement, from the prompt's question-type group of
    # rl.yaml, on top of its always_on lines; fresh draws for every rollout
    max_principles: int = Field(default=3, ge=0)
    # bonus = length_bonus_coef * min(response_tokens / length_norm_tokens * multiplier, cap)
    length_bonus_coef: float = 5.0
    length_norm_tokens: int = Field(default=1024, gt=0)
    length_bonus_cap: float = 0.8
    # per question type; negative = a penalty (SALMON: -0.4 for reasoning; not clamped at 0)
    length_multiplier: dict[QuestionType, float] = {"general": 1.0, "reasoning": -0.4, "red_teaming": 1.0}
    # added when the response ran to the token cap: no stop sequence and no EOS (SALMON: EOS too)
    no_stop_penalty: float = -6.0
    # added for every principle in force (always-on or drawn) whose verifiable rule the
    # response breaks: a symbolic term, as SALMON's length bonus and stop penalty are (SALMON's
    # own principles carry no rules at RL time; comparative length rules need two responses and
    # are not used here). 0 switches rules off.
    rule_penalty: float = Field(default=-2.0, le=0)
    # Off: rl.yaml's always-on lines are not shown to the RM (its prompt lists only the drawn
    # principles) but stay in force through their verifiable rules (rule_penalty), for a reward
    # model that follows only principle texts it was trained on, one at a time (the tiny one).
    show_always_on: bool = True


class RLConfig(_Strict):
    """RL against the instructable reward model (``profile.rl``); the trainer's hyperparameters
    are in ``profile.ppo``."""

    # ppo: our PPO loop (policy + value model); rloo / grpo: TRL's critic-free trainers, same reward
    algorithm: Literal["ppo", "rloo", "grpo"] = "ppo"
    # rloo / grpo: completions sampled per prompt (the baseline is computed within each group)
    group_size: int = Field(default=4, ge=2)
    # When set, every question type draws from these reward-model principles (their definitions
    # verbatim) instead of rl.yaml's groups: for a reward model that only follows the texts it was
    # trained on (the tiny profile's). rl.yaml's always_on lines still apply unless always_on is off.
    reward_model_principles: list[str] | None = None
    always_on: bool = True
    reward: RLRewardConfig = RLRewardConfig()


class PPOConfig(TrainingConfig):
    """The RL trainer (``profile.ppo``). Inherited: ``lora`` (the policy's and value model's),
    ``learning_rate``, ``per_device_batch_size`` (sequences per forward/backward),
    ``gradient_accumulation_steps``, ``epochs`` (passes over the prompts; SALMON: 2),
    ``max_steps`` (a cap on rollouts). Defaults are SALMON's where it states them."""

    # prompts per rollout per process (SALMON: 576 in all, split into 2 optimizer batches of 288)
    rollout_batch_size: int = Field(default=64, gt=0)
    # optimisation epochs over each rollout batch
    ppo_epochs: int = Field(default=2, gt=0)
    # sequences per no-grad forward while making experience (log-probs, values); None = per_device_batch_size
    forward_batch_size: int | None = Field(default=None, gt=0)
    # prompts whose policy prompt is longer are dropped (SALMON: 256)
    max_prompt_tokens: int = Field(default=256, gt=0)
    max_new_tokens: int = Field(default=1024, gt=0)
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    # per-token penalty -kl_coef * KL(policy || SFT reference); k1_clamped is SALMON's max(k1, 0)
    kl_coef: float = Field(default=0.01, ge=0)
    kl_estimator: Literal["k1", "k1_clamped", "k3"] = "k1"
    # the whole per-token reward (sequence reward and KL term) times this (SALMON: 10)
    reward_scale: float = Field(default=1.0, gt=0)
    gamma: float = Field(default=1.0, ge=0, le=1)
    lam: float = Field(default=0.95, ge=0, le=1)
    whiten_advantages: bool = True
    clip_range: float = Field(default=0.2, gt=0)
    value_clip_range: float = Field(default=0.2, gt=0)
    # loss = policy loss + vf_coef * value loss (SALMON: 0.1)
    vf_coef: float = Field(default=0.1, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    # linear warm-up: this many optimizer steps, or rollouts with warmup_unit "rollouts" (SALMON: 5
    # rollouts)
    warmup_steps: int = Field(default=5, ge=0)
    warmup_unit: Literal["optimizer_steps", "rollouts"] = "optimizer_steps"
    # checkpoint every this many rollouts (and at the end); a rerun resumes from the newest
    save_every: int = Field(default=10, gt=0)
    # decoded responses with their principles and reward parts, every this many rollouts
    samples_every: int = Field(default=5, gt=0)
    samples_per_step: int = Field(default=4, gt=0)
    # CPU precision of forward/backward passes; "auto" = bf16 autocast where the CPU computes bf16
    # natively (CUDA always autocasts to bf16); losses and statistics stay float32
    cpu_precision: Literal["auto", "float32"] = "auto"

    def optimizer_steps_per_rollout(self) -> int:
        """Optimizer steps each rollout makes: its micro-batches, in groups of
        ``gradient_accumulation_steps`` (the last may be short), once per PPO epoch."""
        micro = math.ceil(self.rollout_batch_size / self.per_device_batch_size)
        return self.ppo_epochs * math.ceil(micro / self.gradient_accumulation_steps)

    @model_validator(mode="after")
    def _data_parallel_only(self) -> "PPOConfig":
        # our PPO loop accumulates gradients itself over a rollout's micro-batches; DeepSpeed's
        # engine would own that schedule. Plain data parallel (DDP) with (Q)LoRA is what it runs.
        if self.deepspeed_stage:
            raise ValueError("ppo.deepspeed_stage: the PPO loop runs plain data parallel; set it to 0 "
                             "(ZeRO is for sft and reward_model)")
        return self
