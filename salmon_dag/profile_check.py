"""What a profile asks of the hardware, before any model loads (``salmon profiles --check NAME``).

The effective numbers a user needs before renting GPUs (global batch per optimizer step of each
training stage, rollouts per PPO step, tokens per step, ranks, GPUs) and the contradictions
between settings that would otherwise surface only once a job has started.
"""

from __future__ import annotations

from dataclasses import dataclass

from salmon_dag.config import Profile
from salmon_dag.training.config import TrainingConfig

TRAINING_STAGES = ("sft", "reward_model", "ppo")
UNITS = {"sft": "sequences", "reward_model": "pairs", "ppo": "sequences"}


@dataclass(frozen=True)
class StageNeeds:
    stage: str
    ranks: int
    per_device: int
    accumulation: int
    global_batch: int  # sequences (pairs for the reward model) per optimizer step
    unit: str
    tokens_per_step: int  # at most: global batch x the longest sequence (x 2 for pairs)
    launcher: str
    deepspeed_stage: int
    quantization: str


@dataclass(frozen=True)
class ProfileCheck:
    stages: list[StageNeeds]
    rollouts_per_step: int
    optimizer_steps_per_rollout: int
    generation_gpus: int
    gpus: int  # the most any step needs at once (on a CPU profile: 0)
    problems: list[str]


def _needs(stage: str, cfg: TrainingConfig) -> StageNeeds:
    batch = cfg.per_device_batch_size * cfg.gradient_accumulation_steps * cfg.num_processes
    longest = cfg.max_seq_len * (2 if stage == "reward_model" else 1)
    return StageNeeds(stage, cfg.num_processes, cfg.per_device_batch_size, cfg.gradient_accumulation_steps, batch,
                      UNITS[stage], batch * longest, cfg.launcher, cfg.deepspeed_stage,
                      cfg.lora.quantization if cfg.lora else "none (full fine-tuning)")


def _problems(stage: str, cfg: TrainingConfig, gpus: int | None) -> list[str]:
    # (ranks or ZeRO in process, ZeRO with PPO: the profile's own validation refuses them at load)
    out = []
    if cfg.deepspeed_stage == 3 and cfg.lora is not None and cfg.lora.quantization != "none":
        out.append(f"{stage}: lora.quantization {cfg.lora.quantization} with deepspeed_stage 3: ZeRO-3 shards the "
                   "quantized base weights, which this pipeline does not set up (use ZeRO-2, as the 70B profile does)")
    if gpus is not None and cfg.num_processes > gpus:
        out.append(f"{stage}: {cfg.num_processes} ranks, one per GPU, but {gpus} GPU(s) given")
    return out


def check_profile(profile: Profile, gpus: int | None = None) -> ProfileCheck:
    """Every training stage's effective batch and ranks, PPO's rollouts, the GPUs the profile needs,
    and its contradictions (with ``gpus``, also against that many GPUs)."""
    stages = [_needs(name, getattr(profile, name)) for name in TRAINING_STAGES]
    problems = [p for name in TRAINING_STAGES for p in _problems(name, getattr(profile, name), gpus)]
    ppo, engine = profile.ppo, profile.engine
    cuda = engine.device.startswith("cuda")
    generation = engine.tensor_parallel_size if cuda else 0
    if gpus is not None and cuda and generation > gpus:
        problems.append(f"engine: tensor_parallel_size {generation} needs {generation} GPUs, {gpus} given")
    needed = max([generation] + [s.ranks for s in stages]) if cuda else 0
    return ProfileCheck(stages, ppo.rollout_batch_size * ppo.num_processes, ppo.optimizer_steps_per_rollout(),
                        generation, needed, problems)
