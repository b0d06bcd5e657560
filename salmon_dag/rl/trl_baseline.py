"""The library baseline for RL (``rl.algorithm: rloo | grpo``): TRL's critic-free trainers on the
same SFT policy, prompts and SALMON reward as our PPO, for comparison.

TRL 1.16's ``RLOOTrainer`` / ``GRPOTrainer`` train a fresh LoRA (``ppo.lora``; full fine-tuning when
it is unset) on the SFT policy with its adapter merged in. Generation is TRL's own (transformers
``generate``, no vLLM). The reward is :class:`~salmon_dag.rl.reward.SalmonReward`, passed as a
Python reward function (:class:`SalmonRewardFunction`): it records every sample's reward parts.

How our config maps (:func:`trl_config`):

* one optimizer step = one rollout = ``ppo.rollout_batch_size`` prompts x ``rl.group_size``
  completions: ``per_device_train_batch_size`` = ``ppo.per_device_batch_size`` (completions per
  forward/backward; lowered to a divisor of the rollout when it does not divide it) and
  ``gradient_accumulation_steps`` = rollout / that, so TRL's ``steps_per_generation`` (which
  defaults to the accumulation steps) gives one generation per optimizer step.
  ``ppo.gradient_accumulation_steps`` is therefore not used; nor is ``ppo.ppo_epochs``:
  ``num_iterations`` stays 1 (each rollout is used once, as RLOO and GRPO are defined).
* ``num_generations`` = ``rl.group_size``; ``beta`` = ``ppo.kl_coef`` (RLOO: k1 KL summed over the
  sequence and subtracted from the reward, like our PPO; GRPO: k3 KL per token in the loss);
  ``epsilon`` = ``ppo.clip_range``; ``max_completion_length`` = ``ppo.max_new_tokens``;
  ``temperature``, ``top_p``, ``learning_rate``, ``lr_scheduler_type``, ``warmup_steps``,
  ``max_grad_norm``, ``num_train_epochs`` = ``ppo.epochs``, ``max_steps`` and ``seed`` as named.
  Prompts longer than ``ppo.max_prompt_tokens`` are dropped, as our PPO does.
* dropout is off (``disable_dropout``): TRL computes the "old" and reference log-probs in train
  mode, so LoRA dropout would otherwise add noise to the KL and to the ratio.
* Other TRL defaults are kept: RLOO ``normalize_advantages=False``; GRPO ``loss_type="dapo"``,
  ``scale_rewards="group"``.

Stop sequences and the reward's bookkeeping: :mod:`salmon_dag.rl.trl_rollouts`.

Other TRL 1.16 / transformers 5 behaviour worked around here:

* transformers' ``Trainer`` sets ``model.config.use_cache = args.use_cache`` (False by default) and
  TRL's generation config leaves ``use_cache`` unset, so every new token recomputed the whole
  sequence (30x slower steps on the tiny model): ``generation_kwargs={"use_cache": True}``.
* for full fine-tuning TRL reloads the KL reference from ``model.config._name_or_path``, which
  names the base model, not the SFT-merged policy: it is pointed at a saved copy of the policy.
* PEFT froze the base weights while merging the SFT adapter; full fine-tuning unfreezes them.

Plain Python: no dagster import here.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from transformers import PrinterCallback, TrainerCallback

from salmon_dag import templates
from salmon_dag.config import PPOConfig, RLConfig
from salmon_dag.rl.records import STEP_TIME, reward_metrics
from salmon_dag.rl.reward import SalmonReward
from salmon_dag.rl.trl_rollouts import SalmonRewardFunction, trainer_classes
from salmon_dag.training.harness import optimizer_args, runtime_args
from salmon_dag.warehouse import atomic_path

STAGE = "rl"
ALGORITHMS = ("rloo", "grpo")
# TRL's logged metric -> ours (objective/kl is converted: see step_metrics)
TRL_METRICS = {"entropy": "objective/entropy", "clip_ratio/region_mean": "ppo/clip_fraction"}
STEP_METRICS = (
    "objective/reward", "objective/rm_score", "objective/length_bonus", "objective/stop_penalty",
    "objective/rule_penalty", "objective/stop_rate",
    "objective/kl", "objective/entropy", "objective/response_tokens", "ppo/clip_fraction", STEP_TIME,
)
MANIFEST = "trl_baseline.json"


@dataclass
class TRLResult:
    """What :func:`train_trl` produced.

    ``steps``: one dict per optimizer step (= rollout), ``step`` 0-based as in ``samples``, with
    :data:`STEP_METRICS` (``ppo/clip_fraction`` and ``objective/kl`` only where TRL logs them),
    ``objective/kl_per_token`` and TRL's own logs under ``trl/``.
    ``samples``: every completion as a ``ppo_samples`` row (:func:`salmon_dag.rl.records.sample_row`;
    the response cut at the stop sequence, no per-sample KL). ``out_dir`` holds the LoRA adapter
    (on top of the SFT-merged policy: load with :func:`load_trl_policy`) or, when ``is_adapter`` is
    False, the whole model; and the tokenizer."""

    steps: list[dict[str, float]]
    samples: list[dict[str, Any]]
    seconds_per_step: float
    out_dir: Path
    algorithm: str = "rloo"
    is_adapter: bool = True
    trl_args: dict[str, Any] = field(default_factory=dict)
    prompts: int = 0  # prompts trained on (those that fit ppo.max_prompt_tokens)
    dropped_prompts: int = 0  # prompts dropped for their length


# --------------------------------------------------------------------------- config
def check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"rl.algorithm: {algorithm!r} is not a TRL baseline (expected one of {', '.join(ALGORITHMS)})")


def micro_batch(completions: int, per_device_batch_size: int) -> int:
    """The largest divisor of ``completions`` that is at most ``per_device_batch_size``."""
    return max(d for d in range(1, min(completions, per_device_batch_size) + 1) if completions % d == 0)


def trl_config(algorithm: str, ppo: PPOConfig, rl: RLConfig, work_dir: Path, seed: int, device: str,
               max_steps: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``RLOOConfig`` / ``GRPOConfig`` for our config (see the module doc)."""
    check_algorithm(algorithm)
    completions = ppo.rollout_batch_size * rl.group_size
    per_device = micro_batch(completions, ppo.per_device_batch_size)
    scheduler = ppo.lr_scheduler
    if ppo.warmup_unit == "rollouts":
        raise ValueError("ppo.warmup_unit: rollouts is counted by our PPO loop; TRL's RLOO/GRPO trainers warm up "
                         "for warmup_steps optimizer steps (set warmup_unit: optimizer_steps)")
    if scheduler == "constant" and ppo.warmup_steps:
        scheduler = "constant_with_warmup"
    steps = max_steps or ppo.max_steps
    return dict(
        output_dir=str(work_dir),
        # batch: one optimizer step (and one generation) per rollout of rollout_batch_size prompts
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=completions // per_device,
        num_generations=rl.group_size,
        num_iterations=1,
        num_train_epochs=ppo.epochs,
        max_steps=steps or -1,
        # generation
        max_completion_length=ppo.max_new_tokens,
        temperature=ppo.temperature,
        top_p=ppo.top_p,
        use_vllm=False,
        # transformers 5's Trainer sets model.config.use_cache = args.use_cache (False by default), and
        # TRL's generate then recomputes the whole sequence at every new token: keep the KV cache on
        generation_kwargs={"use_cache": True},
        # objective
        beta=ppo.kl_coef,
        epsilon=ppo.clip_range,
        disable_dropout=True,
        # optimisation
        learning_rate=ppo.learning_rate,
        lr_scheduler_type=scheduler,
        warmup_steps=ppo.warmup_steps,
        **optimizer_args(ppo),  # max_grad_norm always: PPO's has a value
        # seeds, precision and runtime as every other trainer here
        **runtime_args(seed, device),
        remove_unused_columns=False,  # the reward needs instruction and question_type
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        log_completions=False,
        disable_tqdm=True,
    )


# --------------------------------------------------------------------------- data
def rl_dataset(prompts: pl.DataFrame, tokenizer, max_prompt_tokens: int):
    """TRL rows: ``prompt`` (the chat prompt), ``instruction``, ``question_type``, ``prompt_id``,
    kept and encoded as our PPO keeps them (:func:`~salmon_dag.rl.ppo.policy_prompts`). Returns
    (dataset, dropped count)."""
    import datasets

    from salmon_dag.rl.ppo import policy_prompts

    rows, dropped = policy_prompts(prompts, tokenizer, max_prompt_tokens)
    return datasets.Dataset.from_dict({
        "prompt": [templates.format_chat_prompt(r.instruction) for r in rows],
        "instruction": [r.instruction for r in rows],
        "question_type": [r.question_type for r in rows],
        "prompt_id": [r.prompt_id for r in rows],
    }), dropped


# --------------------------------------------------------------------------- metrics
class StepRecorder(TrainerCallback):
    """Wall time of every optimizer step (generation included) and TRL's logs, by ``global_step``
    after the step; one ``log`` line per step."""

    def __init__(self, algorithm: str, log: Callable[[str], None]):
        self.algorithm = algorithm
        self.log = log
        self.seconds: dict[int, float] = {}
        self.logs: dict[int, dict[str, float]] = {}
        self._t0 = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds[state.global_step] = time.perf_counter() - self._t0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:  # the end-of-training summary
            return
        self.logs[state.global_step] = {k: float(v) for k, v in logs.items()
                                        if isinstance(v, (int, float)) and not isinstance(v, bool)}
        reward = logs.get("reward")
        reward_text = f" reward {reward:.3f}" if isinstance(reward, (int, float)) else ""
        self.log(f"{STAGE} ({self.algorithm}): step {state.global_step}/{state.max_steps}{reward_text} "
                 f"[{self.seconds.get(state.global_step, float('nan')):.1f}s]")


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def step_metrics(step: int, samples: Sequence[dict[str, Any]], trl_logs: dict[str, float], seconds: float) -> dict[str, float]:
    """Our metric names for one optimizer step: the reward parts from the recorded ``samples``,
    KL / entropy / clip fraction from TRL's logs, the step's wall time.

    ``objective/kl`` follows our PPO (per-sample KL summed over the response, mean over samples):
    TRL logs the per-token mean over the batch's response tokens, so it is times the mean response
    length (exact for RLOO, whose one log covers the whole rollout)."""
    out: dict[str, float] = {"step": float(step), **reward_metrics(samples), STEP_TIME: seconds}
    tokens = out["objective/response_tokens"]
    if "kl" in trl_logs:
        out["objective/kl_per_token"] = trl_logs["kl"]
        out["objective/kl"] = trl_logs["kl"] * tokens
    for theirs, ours in TRL_METRICS.items():
        if theirs in trl_logs:
            out[ours] = trl_logs[theirs]
    out.update({f"trl/{k}": v for k, v in trl_logs.items()})
    return out


# --------------------------------------------------------------------------- training
def train_trl(
    algorithm: str,
    source,
    reward: SalmonReward,
    prompts: pl.DataFrame,
    ppo: PPOConfig,
    rl: RLConfig,
    out_dir: Path,
    seed: int,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    max_steps: int | None = None,
    merged: bool = False,
    extra_files: Callable[[Path, list[dict[str, float]]], None] | None = None,
) -> TRLResult:
    """Train the SFT policy (``source``: a :class:`~salmon_dag.rl.models.PolicySource`) with TRL's
    ``algorithm`` ("rloo" or "grpo") against ``reward`` on ``prompts`` (columns ``prompt`` = the
    bare instruction, ``question_type``, optional ``prompt_id``); save the adapter (or the whole
    model) and tokenizer to ``out_dir``. ``max_steps`` overrides ``ppo.max_steps``. ``merged``: save
    the policy whole, its LoRA merged in (what ``ppo_policy`` keeps); ``extra_files(dir, steps)``
    writes more files into the same atomic save."""
    check_algorithm(algorithm)
    from transformers import set_seed

    from salmon_dag.rl.models import load_sft_policy
    from salmon_dag.training.lora import describe_mode, peft_config, training_device

    if ppo.lora is not None and ppo.lora.quantization != "none":
        raise ValueError(f"ppo.lora.quantization: {ppo.lora.quantization!r} (QLoRA) is not supported with "
                         f"rl.algorithm {algorithm}; set it to 'none'")
    device = training_device(device, ppo.lora, STAGE)
    out_dir = Path(out_dir)
    set_seed(seed)
    model, tokenizer = load_sft_policy(source, ppo, device)  # trainable weights (full fine-tuning)
    dataset, dropped = rl_dataset(prompts, tokenizer, ppo.max_prompt_tokens)
    if dropped:
        log(f"{STAGE}: {dropped} prompts longer than {ppo.max_prompt_tokens} tokens dropped")
    if len(dataset) < ppo.rollout_batch_size:
        raise ValueError(f"{STAGE}: {len(dataset)} prompts, fewer than ppo.rollout_batch_size "
                         f"({ppo.rollout_batch_size}); lower rollout_batch_size")

    config_cls, trainer_cls = trainer_classes()[algorithm]
    eos_ids = model.generation_config.eos_token_id
    eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    reward_fn = SalmonRewardFunction(reward, eos_ids)
    recorder = StepRecorder(algorithm, log)

    with tempfile.TemporaryDirectory(prefix="salmon-trl-") as work:
        work_dir = Path(work)
        kwargs = trl_config(algorithm, ppo, rl, work_dir / "trainer", seed, device, max_steps)
        name_or_path = model.config._name_or_path
        if ppo.lora is None and ppo.kl_coef > 0:
            # TRL reloads the reference of a full fine-tune from model.config's path, which names the
            # base model, not the SFT-merged policy: point it at a saved copy of the policy.
            reference_dir = work_dir / "reference"
            model.save_pretrained(reference_dir)
            model.config._name_or_path = str(reference_dir)
        args = config_cls(**kwargs)
        log(f"{STAGE} ({algorithm}): {len(dataset)} prompts, {ppo.rollout_batch_size} prompts x {rl.group_size} "
            f"completions per step ({args.per_device_train_batch_size} per forward, "
            f"{args.gradient_accumulation_steps} accumulated), {describe_mode(ppo.lora)} on {device}")
        trainer = trainer_cls(
            model=model,
            reward_funcs=reward_fn,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config(ppo.lora) if ppo.lora is not None else None,
            callbacks=[recorder],
        )
        model.config._name_or_path = name_or_path
        trainer.remove_callback(PrinterCallback)  # it prints every log dict; StepRecorder logs one line a step
        trainer.train()
        trained = trainer.accelerator.unwrap_model(trainer.model)
        steps = _steps(reward_fn.records, recorder)
        is_adapter = ppo.lora is not None and not merged

        if trainer.accelerator.is_main_process:  # under accelerate launch: one writer
            if ppo.lora is not None and merged:
                trained = trained.merge_and_unload()
            with atomic_path(out_dir) as tmp:
                trained.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                (tmp / MANIFEST).write_text(json.dumps({
                    "algorithm": algorithm, "is_adapter": is_adapter,
                    "policy": {"model_id": source.model_id, "revision": source.revision,
                               "adapter_path": source.adapter_path, "trust_remote_code": source.trust_remote_code},
                    "steps": int(trainer.state.global_step), "seed": seed,
                }, indent=2))
                if extra_files is not None:
                    extra_files(tmp, steps)
        trainer.accelerator.wait_for_everyone()

    times = [s[STEP_TIME] for s in steps]
    seconds_per_step = _mean(times[1:] if len(times) > 1 else times)
    log(f"{STAGE} ({algorithm}): {len(steps)} steps, {seconds_per_step:.2f} s per step (first excluded)")
    return TRLResult(
        steps=steps, samples=list(reward_fn.records), seconds_per_step=seconds_per_step, out_dir=out_dir,
        algorithm=algorithm, is_adapter=is_adapter,
        trl_args={k: v for k, v in kwargs.items() if k != "output_dir"},
        prompts=len(dataset), dropped_prompts=dropped,
    )


def _steps(records: list[dict[str, Any]], recorder: StepRecorder) -> list[dict[str, float]]:
    """One metrics dict per optimizer step, from the recorded samples and TRL's logs."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_step.setdefault(record["step"], []).append(record)
    return [step_metrics(step, by_step[step], recorder.logs.get(step + 1, {}), recorder.seconds.get(step + 1, float("nan")))
            for step in sorted(by_step)]


def load_trl_policy(out_dir: Path, ppo: PPOConfig, device: str = "cpu"):
    """(model, tokenizer) of a policy :func:`train_trl` saved: the SFT-merged policy with the RL
    adapter merged in, or the saved full model."""
    from transformers import AutoModelForCausalLM

    from salmon_dag.base_model.loading import load_tokenizer
    from salmon_dag.rl.models import PolicySource, load_sft_policy

    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    tokenizer = load_tokenizer(str(out_dir))
    if not manifest["is_adapter"]:
        return AutoModelForCausalLM.from_pretrained(out_dir).to(device), tokenizer
    from peft import PeftModel

    model, _ = load_sft_policy(PolicySource(**manifest["policy"]), ppo, device)
    return PeftModel.from_pretrained(model, str(out_dir)).merge_and_unload(), tokenizer
