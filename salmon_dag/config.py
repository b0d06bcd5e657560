"""Typed, validated run profiles.

A profile is a YAML file (bundled ones live in ``salmon_dag/profiles``). It may name a parent with
``extends: NAME``; the child's keys are deep-merged over the parent's. Unknown keys and bad values
raise :class:`ProfileError` with one line naming the file and the dotted key.

Every section is declared beside its stage (``<stage>/config.py``: the prompt pool, the engine,
Self-Align data, pairs, judging, the reward model's examples, the training stages, the base model,
the benchmarks, the Kubernetes pod) and re-exported here; this module composes them into a
:class:`Profile` and loads profiles. Stage packages import their method on first use
(``salmon_dag.lazy``), so loading a profile needs neither polars nor torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from salmon_dag.pairs.config import PairsConfig
from salmon_dag.preferences.config import JudgeConfig
from salmon_dag.prompt_pool.config import PromptFormat, PromptPoolConfig, PromptSource
from salmon_dag.reward_model.config import HumanPairsConfig, PMPConfig, RewardModelConfig, RMBenchmarksConfig
from salmon_dag.rl.config import PPOConfig, RLConfig, RLRewardConfig
from salmon_dag.rm_training_data.config import AggregationConfig
from salmon_dag.self_align.config import SelfAlignConfig
from salmon_dag.training.config import LoraConfig, SFTStageConfig, TrainingConfig

# the sections declared beside their stages, importable from here as before
__all__ = [
    "AggregationConfig", "BaseModelConfig", "BenchmarkJudgeConfig", "BenchmarksConfig", "BenchmarkSource", "DType",
    "EngineConfig", "GSM8KConfig", "HumanEvalConfig", "HumanPairsConfig", "JudgeConfig", "KubernetesConfig",
    "KubernetesVolume", "LoraConfig", "MTBenchConfig", "PairsConfig", "PMPConfig", "PolicyName", "PPOConfig",
    "ProfileError", "PromptFormat", "PromptPoolConfig", "PromptSource", "QUESTION_TYPES", "QuestionType",
    "RewardModelConfig", "RLConfig", "RLRewardConfig", "RMAgreementConfig", "SelfAlignConfig", "SFTStageConfig",
    "TinyModelConfig", "TrainingConfig", "WinRateConfig",
    # declared here: the profile itself and the instance settings
    "InstanceConfig", "Profile", "available_profiles", "load_profile", "stable_hash",
]

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "tiny"


class InstanceConfig(_Strict):
    """Settings of the Dagster instance the project creates (``<warehouse>/.dagster/dagster.yaml``)."""

    # Steps that load a model onto the accelerator hold one of these slots (``pool="accelerator"``);
    # runs wait for a free one. One GPU: 1. A limit set in the UI or with
    # ``dagster instance concurrency set accelerator N`` takes precedence over this default.
    accelerator_pool_limit: int = Field(default=1, ge=1)
    # How often the daemon's sensors run (`salmon ui`): the principle-file sensor looks for edits and
    # the automation sensor (when switched on) launches the rebuild of what they made stale.
    sensor_interval_s: int = Field(default=15, ge=1)


def paths_overlap(a: str, b: str) -> bool:
    """Whether dotted profile paths ``a`` and ``b`` are the same setting or one holds the other."""
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


class RehearsalChange(_Strict):
    """A setting a rehearsal changed (salmon_dag.rehearsal): dotted path, real value, its own, why."""

    path: str
    real: Any = None
    rehearsal: Any = None
    why: str


class RehearsalRecord(_Strict):
    """What makes a profile a rehearsal of ``of``: the only settings it changed."""

    of: str
    changes: list[RehearsalChange]

    def for_sections(self, sections: Sequence[str]) -> list[RehearsalChange]:
        """The changes inside ``sections`` (top-level keys or dotted fields)."""
        return [c for c in self.changes if any(paths_overlap(c.path, s) for s in sections)]


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
    rm_benchmarks: RMBenchmarksConfig = RMBenchmarksConfig()
    ppo: PPOConfig = PPOConfig()
    rl: RLConfig = RLConfig()
    benchmarks: BenchmarksConfig = BenchmarksConfig()
    instance: InstanceConfig = InstanceConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    # set by ``rehearse: true`` (load_profile): this profile rehearses a real one on the CPU
    rehearsal: RehearsalRecord | None = None

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

    def section(self, dotted: str) -> Any:
        """Section (``"sft"``) or dotted field (``"engine.device"``) ``dotted`` as it is held."""
        value: Any = self
        for part in dotted.split("."):
            if not isinstance(value, BaseModel) or part not in type(value).model_fields:
                raise KeyError(f"profile has no section {dotted!r}")
            value = getattr(value, part)
        return value

    def _section(self, dotted: str) -> Any:
        value = self.section(dotted)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


# --------------------------------------------------------------------------- loading
def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON form of ``obj`` (dict order and whitespace do not matter)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(name_or_path: str) -> Path:
    """The YAML file of a bundled profile name or a profile path (ProfileError when there is none)."""
    return _resolve(name_or_path)


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
    """Load a bundled profile by name or a YAML file by path; ``overrides`` are deep-merged last.

    ``rehearse: true`` (in the file or the overrides) loads the profile's CPU rehearsal
    (salmon_dag.rehearsal): the real profile is validated first, then shrunk."""
    data, path = _raw_profile(name_or_path)
    if overrides:
        data = _deep_merge(data, overrides)
    rehearse = data.pop("rehearse", False)
    if not isinstance(rehearse, bool):
        raise ProfileError(f"{path}: rehearse: must be true or false")
    profile = _validate(data, path)
    if not rehearse:
        return profile
    if profile.rehearsal is not None:
        return profile
    from salmon_dag.rehearsal import rehearsal_data

    shrunk, changes = rehearsal_data(profile.model_dump(mode="json"))
    shrunk["rehearsal"] = {"of": profile.name, "changes": changes}
    shrunk["name"] = f"{profile.name}-rehearsal"
    return _validate(shrunk, path)


def _validate(data: dict, path: Path) -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProfileError(f"{path}: {key}: {msg}{more}") from None
