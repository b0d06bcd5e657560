"""One way to run any Hugging Face / TRL ``Trainer``: fingerprint the inputs, resume from the newest
checkpoint of the same inputs, train, and save the final model atomically with its tokenizer,
``training_log.json`` and a plot of the curves.

A stage (SFT, reward model, PPO) supplies a factory that builds its configured trainer; it gets
the work dir for checkpoints and the callbacks this harness needs. Plain Python: no dagster import.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from salmon_dag.config import TrainingConfig
from salmon_dag.training.checkpoints import (
    StampCheckpoints,
    default_work_dir,
    drop_incomplete_checkpoints,
    find_resumable,
    fingerprint,
    read_json,
    stamp_work_dir,
    write_json,
)
from salmon_dag.training.reporting import (
    LOSS_PLOT,
    TRAINING_LOG,
    ProgressLog,
    curves_from_history,
    metric_points,
    plot_curves,
    point_tensorboard,
)
from salmon_dag.errors import disk_full, is_no_space
from salmon_dag.warehouse import atomic_path

CHECKPOINTS_PER_RUN = 4  # default save_steps gives about this many checkpoints

# (work_dir, callbacks) -> a configured transformers.Trainer (or subclass)
TrainerFactory = Callable[[Path, list[TrainerCallback]], Any]
# (trainer, final unwrapped model, directory) -> writes the model and tokenizer into directory
ModelSaver = Callable[[Any, Any, Path], None]


@dataclass
class TrainResult:
    """What a training run produced. ``out_dir`` holds a PEFT adapter when ``is_adapter``, else
    the whole fine-tuned model; ``losses`` are (step, training loss)."""

    out_dir: Path
    steps: int
    losses: list[tuple[int, float]]
    log_history: list[dict[str, Any]]
    resumed_from: str | None
    seconds: float
    train_examples: int
    is_adapter: bool


def expected_steps(n_examples: int, cfg: TrainingConfig) -> int:
    """Optimizer steps a run will take (``max_steps``, else epochs over the batches)."""
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = max(1, math.ceil(math.ceil(n_examples / cfg.per_device_batch_size) / cfg.gradient_accumulation_steps))
    return max(1, math.ceil(per_epoch * cfg.epochs))


def runtime_args(seed: int, device: str) -> dict[str, Any]:
    """The seeds, precision and runtime of every HF/TRL trainer here (the RL baselines' too)."""
    on_cuda = device == "cuda"
    return dict(
        seed=seed,
        data_seed=seed,
        bf16=on_cuda,
        fp16=False,
        use_cpu=not on_cuda,
        gradient_checkpointing=on_cuda,  # a memory saver for real models; only slows tiny CPU runs
        dataloader_num_workers=0,
    )


def optimizer_args(cfg: TrainingConfig) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords of ``cfg``'s optimizer fields that it sets (unset: the
    trainer's defaults)."""
    return {key: value for key, value in (("optim", cfg.optimizer), ("weight_decay", cfg.weight_decay),
                                          ("max_grad_norm", cfg.max_grad_norm)) if value is not None}


def common_training_args(
    cfg: TrainingConfig, work_dir: Path, seed: int, device: str, n_examples: int, save_steps: int | None = None
) -> dict[str, Any]:
    """``TrainingArguments`` keywords every stage shares (TRL's ``SFTConfig`` / ``RewardConfig``
    take them too): optimisation from ``cfg``, precision from ``device``, checkpoints and logs."""
    return dict(
        **optimizer_args(cfg),
        output_dir=str(work_dir),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        **runtime_args(seed, device),
        # every trained parameter takes part in every forward: spare DDP its extra graph traversal
        ddp_find_unused_parameters=False,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps or max(1, math.ceil(expected_steps(n_examples, cfg) / CHECKPOINTS_PER_RUN)),
        save_total_limit=2,
        report_to=["tensorboard"],
    )


def run_training(
    stage: str,
    build_trainer: TrainerFactory,
    inputs: Mapping[str, Any],
    out_dir: Path,
    *,
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
    callbacks: Sequence[TrainerCallback] = (),
    plot_title: str = "{stage}: {steps} steps",
    loss_label: str = "training loss",
    metrics: Sequence[str] = ("accuracy",),
    log_fields: Mapping[str, Any] | None = None,
    save_model: ModelSaver | None = None,
) -> TrainResult:
    """Train with the trainer ``build_trainer(work_dir, callbacks)`` returns; save to ``out_dir``.

    ``inputs`` (JSON-able: base model stamp, data hash, config, seed, device) fingerprint the run.
    Checkpoints live in ``work_dir`` (default :func:`default_work_dir`), which outlives the call:
    a run with the same fingerprint resumes from the newest checkpoint there, other inputs clear
    it. ``out_dir`` appears atomically with the model (or adapter), tokenizer, ``training_log.json``
    (``log_fields`` + steps + history) and ``loss.png`` (loss, plus ``metrics`` when logged;
    ``plot_title`` may use ``{stage}`` and ``{steps}``).
    ``callbacks`` are extra ``TrainerCallback`` s (tests use one to interrupt a run).
    ``save_model`` replaces the default ``save_pretrained`` of model and tokenizer (the reward
    model merges LoRA or checks its head there).
    """
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(out_dir)
    fp = fingerprint(stage, inputs)
    done = finished_result(out_dir, fp.value)
    if done is not None:
        log(f"{stage}: {out_dir} already holds the model these inputs train ({done.steps} steps); nothing to train")
        return done
    trainer = build_trainer(work_dir, [ProgressLog(stage, log, metrics), StampCheckpoints(fp), *callbacks])
    # Under accelerate launch every rank gets here: the main one clears stale checkpoints and
    # stamps the work dir, then all read the same resumable checkpoint.
    procs = trainer.accelerator
    if procs.is_main_process:
        resume = find_resumable(work_dir, fp, log)
        stamp_work_dir(work_dir, fp)
    procs.wait_for_everyone()
    if not procs.is_main_process:
        resume = find_resumable(work_dir, fp, lambda _: None)
    point_tensorboard(trainer, work_dir)
    train_examples = len(trainer.train_dataset)
    if resume:
        log(f"{stage}: resuming from {resume}")
    try:
        trainer.train(resume_from_checkpoint=resume)
    except Exception as exc:
        full = is_no_space(exc, work_dir)  # before anything is freed
        # a checkpoint cut off mid-save is useless (the next run would drop it): drop it now, so
        # that a full disk has room again for the run's own failure to be recorded
        partial = drop_incomplete_checkpoints(work_dir) if procs.is_main_process else []
        if full:
            raise disk_full(partial[0] if partial else work_dir) from exc
        raise

    history = list(trainer.state.log_history)
    steps = int(trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()
    final = trainer.accelerator.unwrap_model(trainer.model)
    result = TrainResult(
        out_dir=out_dir,
        steps=steps,
        losses=metric_points(history, "loss"),
        log_history=history,
        resumed_from=resume,
        seconds=0.0,
        train_examples=train_examples,
        is_adapter=_is_peft(final),
    )
    with _whole_parameters(trainer, final):
        if trainer.is_world_process_zero():  # several processes (accelerate launch): one writer
            title = plot_title.format(stage=stage, steps=steps)
            _save(trainer, final, result, fp.value, title, loss_label, metrics, log_fields or {}, save_model)
            last = f", final loss {result.losses[-1][1]:.4f}" if result.losses else ""
            log(f"{stage}: wrote {out_dir} ({steps} steps{last})")
    trainer.accelerator.wait_for_everyone()
    result.seconds = time.monotonic() - t0
    return result


@contextmanager
def _whole_parameters(trainer: Any, model: Any) -> Iterator[None]:
    """Under DeepSpeed ZeRO-3 each rank holds a shard of every parameter: gather them all (on
    every rank, read-only) while the main rank saves, so savers see whole weights as usual."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not (getattr(trainer, "is_deepspeed_enabled", False) and is_deepspeed_zero3_enabled()):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def finished_result(out_dir: Path, fp: str) -> TrainResult | None:
    """The result already in ``out_dir`` when a run with fingerprint ``fp`` wrote it and its weights
    read whole: a finished stage rebuilt with the same inputs is a no-op (resuming from its last
    checkpoint would not be: a ``max_steps`` run resumed there trains one step more)."""
    from salmon_dag.integrity import safetensors_problem

    saved = read_json(Path(out_dir) / TRAINING_LOG)
    if not isinstance(saved, dict) or saved.get("fingerprint") != fp:
        return None
    weights = sorted(Path(out_dir).glob("*.safetensors"))
    if not weights or any(safetensors_problem(w) for w in weights):
        return None
    history = saved.get("log_history") or []
    return TrainResult(out_dir=Path(out_dir), steps=int(saved.get("steps", 0)), losses=metric_points(history, "loss"),
                       log_history=history, resumed_from=saved.get("resumed_from"), seconds=0.0,
                       train_examples=int(saved.get("train_examples", 0)), is_adapter=bool(saved.get("is_adapter")))


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _save(trainer: Any, model: Any, result: TrainResult, fp: str, title: str, loss_label: str,
          metrics: Sequence[str], log_fields: Mapping[str, Any], save_model: ModelSaver | None) -> None:
    with atomic_path(result.out_dir) as tmp:
        tmp.mkdir(parents=True)
        if save_model is not None:
            save_model(trainer, model, tmp)
        else:
            model.save_pretrained(str(tmp))
            trainer.processing_class.save_pretrained(str(tmp))
        write_json(tmp / TRAINING_LOG, {
            **log_fields,
            "steps": result.steps,
            "train_examples": result.train_examples,
            "resumed_from": result.resumed_from,
            "is_adapter": result.is_adapter,
            "fingerprint": fp,
            "log_history": result.log_history,
        })
        plot_curves(tmp / LOSS_PLOT, title, curves_from_history(result.log_history, loss_label, metrics))
