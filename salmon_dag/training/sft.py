"""Principle engraving (SALMON / Dromedary): supervised fine-tuning on (prompt -> answer) pairs.

The self-aligned answers were generated with principles and exemplars in context; here the base
model learns to give them from the bare prompt (``templates.format_chat_prompt``), so the
principles are "engraved" into the weights. The loss covers the answer tokens only.

TRL's ``SFTTrainer`` does the work on a prompt-completion dataset (``completion_only_loss=True``:
TRL tokenizes prompt and prompt+completion and labels the prompt tokens -100). LoRA / QLoRA via
PEFT, or full fine-tuning when ``sft.lora`` is unset. Checkpointing, resuming and the atomic
final save are the shared harness's (``training.harness``).

Plain Python: no dagster import here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
from transformers import AutoModelForCausalLM, TrainerCallback, set_seed

from salmon_dag import templates
from salmon_dag.base_model.loading import load_tokenizer
from salmon_dag.config import SFTStageConfig
from salmon_dag.training.checkpoints import base_model_stamp, data_hash
from salmon_dag.training.harness import TrainResult, expected_steps, run_training
from salmon_dag.training.lora import describe_mode, load_for_training, peft_config, training_device

STAGE = "sft"

# What an SFT completion ends with. Generation of an assistant turn stops on
# templates.STOP_SEQUENCES (the start of the next user turn), so the model must learn to emit
# exactly that text when its answer is done: we end every completion with TURN_SEPARATOR.
# TRL then appends the tokenizer's EOS after it (SFTTrainer adds EOS to every non-conversational
# completion that does not already end with it), which is harmless: the engines stop on the
# separator (stop string) or on EOS, whichever comes first, and the separator comes first.
TURN_SEPARATOR_END = templates.TURN_SEPARATOR


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


# --------------------------------------------------------------------------- training
def build_sft_trainer(
    base_model_id: str,
    examples: datasets.Dataset,
    cfg: SFTStageConfig,
    work_dir: Path,
    seed: int,
    device: str = "auto",
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    save_steps: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    log: Callable[[str], None] = print,
):
    """The configured ``trl.SFTTrainer`` (model loaded, (Q)LoRA applied, dataset tokenized and
    labelled) that :func:`train_sft` runs; exposed so tests can inspect its batches."""
    from trl import SFTTrainer

    device = training_device(device, cfg.lora, STAGE)
    if len(examples) == 0:
        raise ValueError("sft: no training examples")
    missing = {"prompt", "completion"} - set(examples.column_names)
    if missing:
        raise ValueError(f"sft: examples need 'prompt' and 'completion' columns (missing: {sorted(missing)})")

    args = cfg.trl_config(work_dir, seed, device, len(examples), save_steps)
    set_seed(seed)
    # TRL's collator pads on the right by itself, so the project's left-padding tokenizer (what
    # gets saved next to the adapter, for generation) is used as is.
    tokenizer = load_tokenizer(base_model_id, revision, trust_remote_code)
    model = load_for_training(AutoModelForCausalLM, base_model_id, revision, trust_remote_code, cfg, device)
    log(f"sft: {len(examples)} examples, ~{expected_steps(len(examples), cfg)} steps, "
        f"{describe_mode(cfg.lora)} on {device}")
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora) if cfg.lora is not None else None,
        callbacks=list(callbacks),
    )


def train_sft(
    base_model_id: str,
    examples: datasets.Dataset,
    cfg: SFTStageConfig,
    out_dir: Path,
    seed: int,
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
    device: str = "auto",
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    save_steps: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune ``base_model_id`` (at ``revision``) on ``examples`` (see :func:`sft_examples`),
    loss on answers only.

    ``cfg.lora`` set: LoRA (QLoRA with ``quantization`` 4bit/8bit, CUDA only) and ``out_dir`` gets
    the adapter (``TrainResult.is_adapter``); unset: full fine-tuning and ``out_dir`` gets the
    whole model. A call with the same base model, examples, config, seed and device resumes from
    the newest checkpoint in ``work_dir`` (see :func:`~salmon_dag.training.harness.run_training`).
    ``save_steps`` defaults to about four checkpoints per run.
    """
    device = training_device(device, cfg.lora, STAGE)  # before touching work_dir or loading anything
    inputs = {
        "base_model": base_model_stamp(base_model_id, revision),
        "data": data_hash(examples),
        "cfg": cfg.model_dump(mode="json"),
        "seed": seed,
        "device": device,
    }

    def build(work: Path, harness_callbacks: list[TrainerCallback]):
        trainer = build_sft_trainer(
            base_model_id, examples, cfg, work, seed, device, revision=revision,
            trust_remote_code=trust_remote_code, save_steps=save_steps, callbacks=harness_callbacks, log=log,
        )
        if (skipped := len(examples) - len(trainer.train_dataset)) > 0:
            log(f"sft: {skipped} examples have no answer token within max_seq_len; skipped")
        return trainer

    return run_training(
        STAGE, build, inputs, out_dir, work_dir=work_dir, log=log, callbacks=callbacks,
        plot_title="SFT (principle engraving): {steps} steps", loss_label="training loss (answer tokens)",
        log_fields={"base_model_id": base_model_id, "revision": revision},
    )
