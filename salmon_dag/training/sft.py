"""Principle engraving (SALMON / Dromedary): supervised fine-tuning on (prompt -> answer) pairs.

The self-aligned answers were generated with principles and exemplars in context; here the base
model learns to give them from the bare prompt (``templates.format_chat_prompt``), so the
principles are "engraved" into the weights. The loss covers the answer tokens only.

TRL's ``SFTTrainer`` does the work on a prompt-completion dataset (``completion_only_loss=True``:
TRL tokenizes prompt and prompt+completion and labels the prompt tokens -100). LoRA / QLoRA via
PEFT, or full fine-tuning when ``sft.lora`` is unset. Checkpoints go to a persistent work
directory; a later call with the same inputs resumes from the newest one. The final adapter (or
model) lands in ``out_dir`` atomically.

Plain Python: no dagster import here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerCallback, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from salmon_dag import templates
from salmon_dag.base_model.loading import load_pretrained, load_causal_lm, load_tokenizer, resolve_device
from salmon_dag.config import LoraConfig, TrainStageConfig, stable_hash
from salmon_dag.warehouse import atomic_path

# What an SFT completion ends with. Generation of an assistant turn stops on
# templates.STOP_SEQUENCES (the start of the next user turn), so the model must learn to emit
# exactly that text when its answer is done: we end every completion with TURN_SEPARATOR.
# TRL then appends the tokenizer's EOS after it (SFTTrainer adds EOS to every non-conversational
# completion that does not already end with it), which is harmless: the engines stop on the
# separator (stop string) or on EOS, whichever comes first, and the separator comes first.
TURN_SEPARATOR_END = templates.TURN_SEPARATOR

FINGERPRINT_FILE = "salmon_sft_fingerprint.json"
TRAINING_LOG = "training_log.json"
LOSS_PLOT = "loss.png"
_TENSORBOARD_SUBDIR = "tensorboard"
_CHECKPOINTS_PER_RUN = 4  # default save_steps gives about this many checkpoints
# What training writes to the work dir besides checkpoint-N/ (cleared when the inputs change).
_WORK_DIR_ENTRIES = frozenset({FINGERPRINT_FILE, _TENSORBOARD_SUBDIR, "runs", "README.md"})


@dataclass
class SFTResult:
    adapter_dir: Path
    steps: int
    losses: list[tuple[int, float]]
    resumed_from: str | None
    seconds: float
    train_examples: int


# --------------------------------------------------------------------------- data
def sft_examples(prompts: Sequence[str], responses: Sequence[str]) -> datasets.Dataset:
    """TRL prompt-completion rows: the bare chat prompt (no principles, no exemplars) and the answer.

    ``prompt`` ends with ``### Assistant:``; ``completion`` is `` <answer>`` followed by the turn
    separator (see ``TURN_SEPARATOR_END``), so the model learns where to stop.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"sft_examples: {len(prompts)} prompts but {len(responses)} responses")
    return datasets.Dataset.from_dict(
        {
            "prompt": [templates.format_chat_prompt(p) for p in prompts],
            "completion": [" " + r.strip() + TURN_SEPARATOR_END for r in responses],
        }
    )


# --------------------------------------------------------------------------- (Q)LoRA configs
def quantization_config(lora_cfg: LoraConfig | None) -> BitsAndBytesConfig | None:
    """The bitsandbytes config for QLoRA (``sft.lora.quantization``), or None for no quantization.

    4bit follows the QLoRA paper: NF4 weights, double quantization, bf16 compute.
    """
    if lora_cfg is None or lora_cfg.quantization == "none":
        return None
    if lora_cfg.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    if lora_cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"sft.lora.quantization: unknown value {lora_cfg.quantization!r}")


def peft_config(lora_cfg: LoraConfig):
    """``peft.LoraConfig`` for a causal LM from the profile's LoRA section."""
    import peft

    return peft.LoraConfig(
        task_type="CAUSAL_LM",
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        bias="none",
    )


def _check_quantization_runtime(lora_cfg: LoraConfig | None, device: str) -> None:
    if lora_cfg is None or lora_cfg.quantization == "none":
        return
    if device != "cuda" or not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            f"sft.lora.quantization: '{lora_cfg.quantization}' (QLoRA) needs a CUDA GPU with bitsandbytes "
            f"(pip install -e '.[gpu]'); set it to 'none' to train without quantization (device: {device})"
        )


# --------------------------------------------------------------------------- helpers
def default_work_dir(out_dir: Path) -> Path:
    """Where checkpoints of ``out_dir``'s training live between runs: a hidden sibling."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.work"


def _data_hash(examples: datasets.Dataset) -> str:
    h = hashlib.sha256()
    for row in examples:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _base_model_stamp(base_model_id: str) -> Any:
    """Identity of the base model: the id, plus name/size/mtime of a local checkpoint's files
    (a rebuilt checkpoint at the same path must not resume old adapters)."""
    path = Path(base_model_id).expanduser()
    if not path.is_dir():
        return base_model_id
    files = sorted(p for p in path.iterdir() if p.is_file())
    return [str(path.resolve()), [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")


def _clear_work_dir(work_dir: Path) -> None:
    """Remove what training put in ``work_dir`` (and nothing else a user may keep there)."""
    for entry in work_dir.iterdir():
        ours = entry.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") or entry.name in _WORK_DIR_ENTRIES
        if not ours:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _find_resumable(work_dir: Path, fingerprint: str, log: Callable[[str], None]) -> str | None:
    """The newest checkpoint in ``work_dir`` stamped with ``fingerprint`` (same base model, data,
    config, seed and device), or None. Checkpoints of other inputs are cleared; an unstamped
    newest checkpoint (interrupted between saving and stamping) is dropped and the next tried."""
    if not work_dir.is_dir():
        return None
    run_stamp = (_read_json(work_dir / FINGERPRINT_FILE) or {}).get("fingerprint")
    if run_stamp != fingerprint:
        if any(work_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
            log(f"sft: {work_dir} holds checkpoints of other inputs/config; starting fresh")
        _clear_work_dir(work_dir)
        return None
    while (last := get_last_checkpoint(str(work_dir))) is not None:
        stamp = (_read_json(Path(last) / FINGERPRINT_FILE) or {}).get("fingerprint")
        if stamp == fingerprint and (Path(last) / "trainer_state.json").is_file():
            return last
        if stamp is not None and stamp != fingerprint:
            log(f"sft: {last} was trained with other inputs/config; starting fresh")
            _clear_work_dir(work_dir)
            return None
        log(f"sft: dropping incomplete checkpoint {last}")
        shutil.rmtree(last)
    return None


class _StampCheckpoints(TrainerCallback):
    """Writes the run's fingerprint into each checkpoint once the trainer has saved it."""

    def __init__(self, fingerprint: dict[str, Any]):
        self.fingerprint = fingerprint

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if ckpt.is_dir():
                _write_json(ckpt / FINGERPRINT_FILE, self.fingerprint)


class _ProgressLog(TrainerCallback):
    """One ``log`` line about every 10% of the optimizer steps, with the loss."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.every = 1
        self.t0 = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.every = max(1, state.max_steps // 10)
        self.t0 = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        step, total = state.global_step, max(state.max_steps, 1)
        if step % self.every == 0 or step == total:
            lr = logs.get("learning_rate")
            lr_text = f" lr {lr:.2e}" if isinstance(lr, (int, float)) else ""
            self.log(
                f"sft: step {step}/{total} ({100 * step // total}%) loss {logs['loss']:.4f}{lr_text} "
                f"[{time.monotonic() - self.t0:.0f}s]"
            )


def _plot_losses(losses: list[tuple[int, float]], path: Path, title: str) -> None:
    # Object-oriented Agg canvas: no pyplot, no global backend switch in the calling process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if losses:
        steps, values = zip(*losses)
        ax.plot(steps, values, marker="." if len(losses) < 50 else None, linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), format="png")


def _expected_steps(n_examples: int, cfg: TrainStageConfig) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = max(1, math.ceil(math.ceil(n_examples / cfg.per_device_batch_size) / cfg.gradient_accumulation_steps))
    return max(1, math.ceil(per_epoch * cfg.epochs))


def _load_model(base_model_id: str, cfg: TrainStageConfig, device: str):
    qconf = quantization_config(cfg.lora)
    if qconf is not None:
        import peft

        # The project's loader (one-line errors); 4/8-bit weights cannot be moved with .to(), so
        # they are placed on the GPU at load time.
        model = load_pretrained(
            AutoModelForCausalLM,
            base_model_id,
            None,
            False,
            dtype=torch.bfloat16,
            quantization_config=qconf,
            device_map={"": torch.cuda.current_device()},
        )
        return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    # CPU: float32. CUDA: frozen bf16 base under LoRA; full fine-tuning keeps float32 master
    # weights and trains with bf16 autocast.
    dtype = "bfloat16" if device == "cuda" and cfg.lora is not None else "float32"
    return load_causal_lm(base_model_id, dtype=dtype, device=device)


# --------------------------------------------------------------------------- training
def build_sft_trainer(
    base_model_id: str,
    examples: datasets.Dataset,
    cfg: TrainStageConfig,
    work_dir: Path,
    seed: int,
    device: str = "auto",
    *,
    save_steps: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    log: Callable[[str], None] = print,
):
    """The configured ``trl.SFTTrainer`` (model loaded, (Q)LoRA applied, dataset tokenized and
    labelled) that :func:`train_sft` runs; exposed so tests can inspect its batches."""
    from trl import SFTConfig, SFTTrainer

    device = resolve_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("sft: device 'cuda' requested but no CUDA GPU is available")
    _check_quantization_runtime(cfg.lora, device)
    if len(examples) == 0:
        raise ValueError("sft: no training examples")
    missing = {"prompt", "completion"} - set(examples.column_names)
    if missing:
        raise ValueError(f"sft: examples need 'prompt' and 'completion' columns (missing: {sorted(missing)})")

    on_cuda = device == "cuda"
    total_steps = _expected_steps(len(examples), cfg)
    args = SFTConfig(
        output_dir=str(work_dir),
        # data: prompt-completion rows; loss on the completion only (TRL labels prompt tokens -100)
        completion_only_loss=True,
        max_length=cfg.max_seq_len,
        packing=False,
        # optimisation
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        seed=seed,
        data_seed=seed,
        bf16=on_cuda,
        fp16=False,
        use_cpu=not on_cuda,
        gradient_checkpointing=on_cuda,  # a memory saver for real models; only slows tiny CPU runs
        dataloader_num_workers=0,
        # bookkeeping
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps or max(1, math.ceil(total_steps / _CHECKPOINTS_PER_RUN)),
        save_total_limit=2,
        report_to=["tensorboard"],
    )

    set_seed(seed)
    # TRL's collator pads on the right by itself, so the project's left-padding tokenizer (what
    # gets saved next to the adapter, for generation) is used as is.
    tokenizer = load_tokenizer(base_model_id)
    model = _load_model(base_model_id, cfg, device)
    mode = f"LoRA r={cfg.lora.r}" if cfg.lora else "full fine-tuning"
    if cfg.lora and cfg.lora.quantization != "none":
        mode += f" ({cfg.lora.quantization})"
    log(f"sft: {len(examples)} examples, ~{total_steps} steps, {mode} on {device}")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora) if cfg.lora is not None else None,
        callbacks=[_ProgressLog(log), *callbacks],
    )
    for cb in trainer.callback_handler.callbacks:  # TensorBoard event files go under work_dir
        if type(cb).__name__ == "TensorBoardCallback":
            cb.logging_dir = str(Path(work_dir) / _TENSORBOARD_SUBDIR)
    return trainer


def train_sft(
    base_model_id: str,
    examples: datasets.Dataset,
    cfg: TrainStageConfig,
    out_dir: Path,
    seed: int,
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
    device: str = "auto",
    *,
    save_steps: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> SFTResult:
    """Fine-tune ``base_model_id`` on ``examples`` (see :func:`sft_examples`), loss on answers only.

    ``cfg.lora`` set: LoRA (QLoRA with ``quantization`` 4bit/8bit, CUDA only) and ``out_dir`` gets
    the adapter; unset: full fine-tuning and ``out_dir`` gets the whole model. The tokenizer,
    ``loss.png`` and ``training_log.json`` go along; ``out_dir`` appears atomically, complete.

    Checkpoints are kept in ``work_dir`` (default ``default_work_dir(out_dir)``), which outlives
    the call: a call with the same base model, examples, config, seed and device resumes from the
    newest checkpoint there (``SFTResult.resumed_from``); other inputs wipe it first.
    ``save_steps`` defaults to about four checkpoints per run; ``callbacks`` are extra
    ``TrainerCallback`` s (tests use one to interrupt a run).
    """
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(out_dir)
    device = resolve_device(device)
    _check_quantization_runtime(cfg.lora, device)  # before touching work_dir or loading anything

    inputs = {
        "stage": "sft",
        "base_model": _base_model_stamp(base_model_id),
        "data": _data_hash(examples),
        "cfg": cfg.model_dump(mode="json"),
        "seed": seed,
        "device": device,
    }
    fingerprint = stable_hash(inputs)
    stamp = {"fingerprint": fingerprint, "inputs": inputs}
    resume = _find_resumable(work_dir, fingerprint, log)
    work_dir.mkdir(parents=True, exist_ok=True)
    _write_json(work_dir / FINGERPRINT_FILE, stamp)

    trainer = build_sft_trainer(
        base_model_id, examples, cfg, work_dir, seed, device,
        save_steps=save_steps, callbacks=[_StampCheckpoints(stamp), *callbacks], log=log,
    )
    train_examples = len(trainer.train_dataset)
    if train_examples < len(examples):
        log(f"sft: {len(examples) - train_examples} examples have no answer token within max_seq_len; skipped")
    if resume:
        log(f"sft: resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)

    history = list(trainer.state.log_history)
    losses = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e and "step" in e]
    steps = int(trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()
    final = trainer.accelerator.unwrap_model(trainer.model)
    if not trainer.is_world_process_zero():  # several processes (accelerate launch): one writer
        return SFTResult(out_dir, steps, losses, resume, time.monotonic() - t0, train_examples)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        final.save_pretrained(str(tmp))
        trainer.processing_class.save_pretrained(str(tmp))
        _write_json(
            tmp / TRAINING_LOG,
            {
                "base_model_id": base_model_id,
                "steps": steps,
                "train_examples": train_examples,
                "resumed_from": resume,
                "fingerprint": fingerprint,
                "log_history": history,
            },
        )
        _plot_losses(losses, tmp / LOSS_PLOT, f"SFT (principle engraving): {steps} steps")
    last = f", final loss {losses[-1][1]:.4f}" if losses else ""
    log(f"sft: wrote {out_dir} ({steps} steps{last})")
    return SFTResult(
        adapter_dir=out_dir,
        steps=steps,
        losses=losses,
        resumed_from=resume,
        seconds=time.monotonic() - t0,
        train_examples=train_examples,
    )
