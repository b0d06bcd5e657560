"""The RL stage end to end, without Dagster: load the SFT policy, the reward model and the RL
principles; train with our PPO (or TRL's RLOO / GRPO, ``rl.algorithm``) resumably; save the policy
atomically; return per-step metrics and decoded samples. The ``ppo_policy`` asset, ``salmon bench
steer`` and a bare GPU machine call :func:`train_policy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from salmon_dag.config import EngineConfig, PPOConfig, RLConfig, stable_hash
from salmon_dag.principles import PrincipleSet
from salmon_dag.rl.models import PolicySource, load_policy, load_value_model
from salmon_dag.rl.ppo import PPOTrainer, policy_prompts
from salmon_dag.rl.records import keeps_samples
from salmon_dag.rl.reward import SalmonReward
from salmon_dag.training.checkpoints import (
    FINGERPRINT_FILE,
    TENSORBOARD_SUBDIR,
    base_model_stamp,
    default_work_dir,
    find_resumable,
    fingerprint,
    stamp_work_dir,
    write_json,
)
from salmon_dag.training.lora import describe_mode, training_device
from salmon_dag.warehouse import atomic_path

Log = Callable[[str], None]
STATE_FILE = "ppo_state.pt"
PLOT = "rl_curves.png"
STEPS_FILE = "rl_steps.json"
# panels of the plot in the asset metadata: y label -> metrics
PLOT_PANELS = {
    "reward": ("objective/reward", "objective/rm_score"),
    "KL to SFT": ("objective/kl",),
    "response tokens": ("objective/response_tokens",),
    "losses": ("ppo/policy_loss", "ppo/value_loss"),
}


@dataclass
class RLResult:
    """``steps``: one dict of metrics per rollout step (key ``step`` too); ``samples``: decoded
    responses with their principles and reward parts; ``out_dir`` holds the policy (a PEFT adapter
    when ``is_adapter``, else the whole model)."""

    algorithm: str
    out_dir: Path
    is_adapter: bool
    steps: list[dict[str, float]]
    samples: list[dict]
    prompts: int
    dropped_prompts: int
    resumed_from: str | None
    seconds: float

    def summary(self) -> dict[str, float]:
        """First- vs last-quarter means of the headline metrics: did the policy move?"""
        out = {}
        for metric in SUMMARY_METRICS:
            first, last = rise([s[metric] for s in self.steps if metric in s])
            name = metric.split("/")[-1]
            out[f"{name}/first_quarter"], out[f"{name}/last_quarter"] = round(first, 4), round(last, 4)
        return out


SUMMARY_METRICS = ("objective/rm_score", "objective/reward", "objective/response_tokens", "objective/kl")


def rise(values: list[float]) -> tuple[float, float]:
    """(mean of the first quarter, mean of the last quarter) of a series (at least one value each)."""
    if not values:
        return float("nan"), float("nan")
    k = max(1, len(values) // 4)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def steps_frame(steps: list[dict[str, float]]) -> pl.DataFrame:
    """Long form (step, metric, value): one row per metric and step, easy to filter in SQL."""
    rows = [(int(s["step"]), k, float(v)) for s in steps for k, v in s.items() if k != "step"]
    return pl.DataFrame(rows, schema={"step": pl.Int64, "metric": pl.Utf8, "value": pl.Float64}, orient="row")


SAMPLE_SCHEMA = {
    "step": pl.Int64, "prompt_id": pl.Utf8, "question_type": pl.Utf8, "instruction": pl.Utf8, "response": pl.Utf8,
    "principles": pl.List(pl.Utf8), "rm_score": pl.Float64, "length_bonus": pl.Float64, "stop_penalty": pl.Float64,
    "rule_penalty": pl.Float64, "reward": pl.Float64, "kl": pl.Float64, "response_tokens": pl.Int64, "finish_reason": pl.Utf8,
}


def samples_frame(samples: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{k: s.get(k) for k in SAMPLE_SCHEMA} for s in samples], schema=SAMPLE_SCHEMA)


def plot_rl_curves(path: Path, steps: list[dict[str, float]], title: str) -> None:
    from salmon_dag.training.reporting import plot_curves

    panels = {label: {m: [(int(s["step"]) + 1, s[m]) for s in steps if m in s] for m in metrics}
              for label, metrics in PLOT_PANELS.items()}
    # TRL's trainers log no value loss: drop what a run did not record
    panels = {label: {m: pts for m, pts in series.items() if pts} for label, series in panels.items()}
    plot_curves(path, title, {label: series for label, series in panels.items() if series})


def train_policy(
    source: PolicySource,
    reward_checkpoint: str | Path,
    rl_principles: PrincipleSet,
    prompts: pl.DataFrame,
    ppo: PPOConfig,
    rl: RLConfig,
    out_dir: Path,
    seed: int,
    device: str = "auto",
    log: Log = print,
    on_step: Callable[[int, dict], None] | None = None,
    engine: EngineConfig | None = None,
) -> RLResult:
    """Train the RL policy from the SFT policy against the instructable RM; resumable. Rollouts
    run on ``engine.backend`` (hf: the live policy; vllm: the current adapter reloaded per step)."""
    from salmon_dag.reward_model.checkpoint import load_scorer

    device = training_device(device, ppo.lora, "ppo")
    torch.manual_seed(seed)
    scorer = load_scorer(reward_checkpoint, device=device, batch_size=max(ppo.per_device_batch_size, 16))
    reward = SalmonReward(scorer, rl_principles, rl.reward, seed)
    if rl.algorithm != "ppo":
        return _train_with_trl(source, reward, prompts, ppo, rl, Path(out_dir), seed, device, log)

    t0 = time.perf_counter()
    policy, tokenizer = load_policy(source, ppo, device, seed)
    value_model = load_value_model(reward_checkpoint, ppo, device, tokenizer)
    rows, dropped = policy_prompts(prompts, tokenizer, ppo.max_prompt_tokens)
    if dropped:
        log(f"ppo: {dropped} prompts longer than ppo.max_prompt_tokens={ppo.max_prompt_tokens} dropped")
    fp = fingerprint("ppo", {
        "policy": base_model_stamp(source.model_id, source.revision),
        "policy_adapter": base_model_stamp(source.adapter_path) if source.adapter_path else None,
        "reward_model": base_model_stamp(str(reward_checkpoint)),
        "principles": rl_principles.content_hash, "prompts": stable_hash(rows and [r.ids for r in rows]),
        "ppo": ppo.model_dump(mode="json"), "rl": rl.model_dump(mode="json"), "seed": seed, "device": device,
        "backend": engine.backend if engine else "hf",
    })
    from accelerate import PartialState

    procs = PartialState(cpu=device == "cpu")  # one process, or N (accelerate launch, torchrun): the main one writes files
    work = default_work_dir(Path(out_dir))
    if procs.is_main_process:
        resumed = find_resumable(work, fp, log)  # clears the work dir when the inputs changed
        if not resumed:
            stamp_work_dir(work, fp)
    procs.wait_for_everyone()
    resumed = find_resumable(work, fp, lambda _: None)
    generator = _generator(engine, source, policy, tokenizer, ppo, device, work, procs)
    trainer = PPOTrainer(policy, tokenizer, value_model, reward, rows, ppo, seed, generator)
    log(f"ppo: {len(rows)} prompts, {trainer.total_steps} rollout steps of {ppo.rollout_batch_size}, "
        f"{describe_mode(ppo.lora)}, reference: {policy.mode}, rollouts on {generator.kind}")
    if resumed:
        trainer.load_state_dict(torch.load(Path(resumed) / STATE_FILE, weights_only=False))
        log(f"ppo: resuming from {resumed} (step {trainer.state.step}/{trainer.total_steps})")

    def save(step: int) -> None:
        if procs.is_main_process:
            with atomic_path(work / f"checkpoint-{step}") as tmp:
                tmp.mkdir()
                torch.save(trainer.state_dict(), tmp / STATE_FILE)
                write_json(tmp / "trainer_state.json", {"global_step": step})
                write_json(tmp / FINGERPRINT_FILE, fp.as_json())
        procs.wait_for_everyone()

    writer = _tensorboard(work) if procs.is_main_process else None

    def after_step(step: int, metrics: dict) -> None:
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, step + 1)
            writer.flush()
        if on_step is not None:
            on_step(step, metrics)

    state = trainer.train(log, save, after_step)
    if writer is not None:
        writer.close()
    is_adapter = policy.mode == "adapter"
    if procs.is_main_process:
        with atomic_path(Path(out_dir)) as tmp:
            model = policy.model
            if policy.mode == "merged":
                model = model.merge_and_unload()
            model.save_pretrained(str(tmp), **({"selected_adapters": ["default"]} if is_adapter else {}))
            tokenizer.save_pretrained(str(tmp))
            write_json(tmp / STEPS_FILE, state.steps)
            plot_rl_curves(tmp / PLOT, state.steps, "PPO against the instructable reward model")
    procs.wait_for_everyone()
    return RLResult("ppo", Path(out_dir), is_adapter, state.steps, state.samples, len(rows), dropped,
                    resumed, time.perf_counter() - t0)


def _train_with_trl(source: PolicySource, reward: SalmonReward, prompts: pl.DataFrame, ppo: PPOConfig, rl: RLConfig,
                    out_dir: Path, seed: int, device: str, log: Log) -> RLResult:
    """TRL's RLOO / GRPO with the same reward; the policy is saved once, whole (its LoRA merged into
    the SFT-merged weights), so ``ppo_policy`` loads the same way whichever algorithm made it."""
    from salmon_dag.rl.trl_baseline import train_trl

    t0 = time.perf_counter()

    def steps_and_plot(folder: Path, steps: list[dict[str, float]]) -> None:
        write_json(folder / STEPS_FILE, steps)
        plot_rl_curves(folder / PLOT, steps, f"{rl.algorithm.upper()} (TRL) against the instructable reward model")

    result = train_trl(rl.algorithm, source, reward, prompts, ppo, rl, Path(out_dir), seed, device=device, log=log,
                       merged=True, extra_files=steps_and_plot)
    total = len(result.steps)
    samples, per_step = [], {}
    for r in result.samples:  # as our PPO keeps them: the first few of the steps it keeps samples of
        if keeps_samples(r["step"], total, ppo.samples_every) and per_step.get(r["step"], 0) < ppo.samples_per_step:
            per_step[r["step"]] = per_step.get(r["step"], 0) + 1
            samples.append(r)
    return RLResult(rl.algorithm, Path(out_dir), False, result.steps, samples, result.prompts, result.dropped_prompts,
                    None, time.perf_counter() - t0)


def _generator(engine: EngineConfig | None, source: PolicySource, policy, tokenizer, ppo: PPOConfig, device: str,
               work: Path, procs):
    """The live policy on HF; on vLLM the SFT weights once and the PPO adapter at every rollout
    (``procs``: accelerate's state; under several ranks the main one writes the merged weights and
    each rank saves its adapter to a folder of its own, which its own vLLM engine reads)."""
    from salmon_dag.rl.generation import LivePolicyGenerator, VLLMAdapterGenerator

    if engine is None or engine.backend == "hf":
        return LivePolicyGenerator(policy.model, tokenizer, max_batch_size=max(ppo.rollout_batch_size, 1))
    if policy.mode == "copy":
        raise ValueError("ppo: rollouts on engine.backend 'vllm' need LoRA (ppo.lora); full fine-tuning "
                         "generates on the hf backend")
    base = source.model_id
    if policy.mode == "merged":  # vLLM serves the SFT-merged weights; the PPO LoRA comes per rollout
        base = work / "sft_merged"
        if procs.is_main_process and not (base / "config.json").is_file():
            from salmon_dag.rl.models import load_sft_policy

            merged, _ = load_sft_policy(source, ppo, device)
            with atomic_path(base) as tmp:
                merged.save_pretrained(str(tmp))
                tokenizer.save_pretrained(str(tmp))
            del merged
        procs.wait_for_everyone()
    adapters = work / "vllm_adapter" / (f"rank-{procs.process_index}" if procs.num_processes > 1 else "")
    return VLLMAdapterGenerator(engine, base, policy.model, tokenizer, adapters, ppo.lora.r)


def _tensorboard(work: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional outside the dev install
        return None
    return SummaryWriter(log_dir=str(work / TENSORBOARD_SUBDIR))
