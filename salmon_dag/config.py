"""Typed, validated run profiles.

A profile is a YAML file (bundled ones live in ``salmon_dag/profiles``). It may name a parent with
``extends: NAME``; the child's keys are deep-merged over the parent's. Unknown keys and bad values
raise :class:`ProfileError` with one line naming the file and the dotted key.

The sections of the prompt pool, the engine, the training stages, the base model, the benchmarks
and the Kubernetes pod are declared beside their stages (``prompt_pool/config.py``,
``engine/config.py``, ``training/config.py``, ``reward_model/config.py``, ``rl/config.py``,
``base_model/config.py``, ``benchmarks/config.py``, ``launch/config.py``) and re-exported here;
this module composes them into a :class:`Profile` and loads profiles. The four data stages'
sections (self-align, pairs, judge, aggregation) are still here: their stage modules define
Parquet schemas with polars at import, and loading a profile must not need polars.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from salmon_dag.base_model.config import BaseModelConfig, TinyModelConfig
from salmon_dag.benchmarks.config import (
    BenchmarkJudgeConfig,
    BenchmarksConfig,
    BenchmarkSource,
    GSM8KConfig,
    HumanEvalConfig,
    MTBenchConfig,
    PolicyName,
    RMAgreementConfig,
    WinRateConfig,
)
from salmon_dag.config_base import QUESTION_TYPES, ProfileError, QuestionType, _Strict
from salmon_dag.engine.config import DType, EngineConfig
from salmon_dag.launch.config import KubernetesConfig, KubernetesVolume
from salmon_dag.prompt_pool.config import PromptFormat, PromptPoolConfig, PromptSource
from salmon_dag.reward_model.config import HumanPairsConfig, PMPConfig, RewardModelConfig
from salmon_dag.rl.config import PPOConfig, RLConfig, RLRewardConfig
from salmon_dag.training.config import LoraConfig, SFTStageConfig, TrainingConfig

# the sections declared beside their stages, importable from here as before
__all__ = [
    "BaseModelConfig", "BenchmarkJudgeConfig", "BenchmarksConfig", "BenchmarkSource", "DType", "EngineConfig",
    "GSM8KConfig", "HumanEvalConfig", "HumanPairsConfig", "KubernetesConfig", "KubernetesVolume", "LoraConfig",
    "MTBenchConfig", "PMPConfig", "PolicyName", "PPOConfig", "ProfileError", "PromptFormat", "PromptPoolConfig",
    "PromptSource", "QUESTION_TYPES", "QuestionType", "RewardModelConfig", "RLConfig", "RLRewardConfig",
    "RMAgreementConfig", "SFTStageConfig", "TinyModelConfig", "TrainingConfig", "WinRateConfig",
    # and those still declared here
    "AggregationConfig", "InstanceConfig", "JudgeConfig", "PairsConfig", "Profile", "SelfAlignConfig",
    "available_profiles", "load_profile", "stable_hash",
]

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "tiny"


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


class InstanceConfig(_Strict):
    """Settings of the Dagster instance the project creates (``<warehouse>/.dagster/dagster.yaml``)."""

    # Steps that load a model onto the accelerator hold one of these slots (``pool="accelerator"``);
    # runs wait for a free one. One GPU: 1. A limit set in the UI or with
    # ``dagster instance concurrency set accelerator N`` takes precedence over this default.
    accelerator_pool_limit: int = Field(default=1, ge=1)


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
