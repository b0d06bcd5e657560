"""Training the instructable reward model: Bradley–Terry on reviewer-prompt pairs with TRL.

TRL's ``RewardTrainer`` gets pre-tokenized ``chosen_ids`` / ``rejected_ids``: its own
``prompt + chosen`` concatenation cannot put principles before and a cue after the reply. The
model is ``AutoModelForSequenceClassification`` with one label (a linear ``score`` head at the
last token); LoRA trains the head too (``modules_to_save``), QLoRA on GPU profiles. The shared
harness (salmon_dag.training.harness) fingerprints, resumes and saves atomically; the checkpoint is
saved merged or as adapter + head (``RewardModelConfig.save``) with a manifest for
:func:`salmon_dag.reward_model.checkpoint.load_reward_model`.

Optional PMP (preference-model pre-training) runs first on human pairs with the principle-free
prompt; the principle fine-tune then continues from its weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForSequenceClassification, TrainerCallback, set_seed

from salmon_dag.base_model.loading import load_tokenizer
from salmon_dag.config import RewardModelConfig, TrainingConfig
from salmon_dag.model_ref import ModelRef
from salmon_dag.reward_model.checkpoint import RewardModelManifest, save_reward_model
from salmon_dag.reward_model.config import LENGTH_COLUMN
from salmon_dag.training.checkpoints import base_model_stamp, data_hash
from salmon_dag.training.harness import TrainResult, run_training
from salmon_dag.training.lora import describe_mode, load_for_training, peft_config, training_device
from salmon_dag.training.precision import use_bf16_autocast

HEAD_MODULES = ["score"]


@dataclass(frozen=True)
class RewardData:
    """Tokenized training and held-out pairs (TRL format)."""

    train: datasets.Dataset
    heldout: datasets.Dataset | None


def _load_model(base: ModelRef, cfg: TrainingConfig, device: str, init_from: Path | None):
    """The scalar-head model to train: from the base model, or continuing a PMP checkpoint."""
    model = load_for_training(
        AutoModelForSequenceClassification, base.model_id, base.revision, base.trust_remote_code, cfg, device,
        num_labels=1,
    )
    if init_from is None:
        # SALMON initialises the head's bias to 0; transformers' Llama head has none, others may.
        bias = getattr(model.score, "bias", None)
        if bias is not None:
            torch.nn.init.zeros_(bias)
        return model, (peft_config(cfg.lora, task_type="SEQ_CLS", modules_to_save=HEAD_MODULES) if cfg.lora else None)
    if cfg.lora is None:  # full fine-tune: the PMP checkpoint is a whole model
        return load_for_training(
            AutoModelForSequenceClassification, str(init_from), None, False, cfg, device, num_labels=1,
        ), None
    import peft

    # continue the PMP adapter (and its head): no second, stacked adapter
    return peft.PeftModel.from_pretrained(model, str(init_from), is_trainable=True), None


def with_pair_lengths(data: datasets.Dataset) -> datasets.Dataset:
    """``data`` with the column the length-grouped sampler sorts by: a pair's longer prompt (its
    chosen and rejected prompts are padded together)."""
    lengths = [max(len(c), len(r)) for c, r in zip(data["chosen_ids"], data["rejected_ids"])]
    return data.add_column(LENGTH_COLUMN, lengths)


def build_reward_trainer(
    base: ModelRef,
    data: RewardData,
    cfg: RewardModelConfig,
    work_dir: Path,
    seed: int,
    device: str,
    callbacks: Sequence[TrainerCallback] = (),
    init_from: Path | None = None,
    save_steps: int | None = None,
):
    """The configured ``trl.RewardTrainer`` (model loaded, LoRA applied, data ready)."""
    from trl import RewardTrainer

    set_seed(seed)
    tokenizer = load_tokenizer(base.model_id, base.revision, base.trust_remote_code)
    model, lora = _load_model(base, cfg, device, init_from)
    model.config.pad_token_id = tokenizer.pad_token_id
    return RewardTrainer(
        model=model,
        args=cfg.trl_config(work_dir, seed, device, len(data.train), save_steps, heldout=data.heldout is not None),
        train_dataset=with_pair_lengths(data.train) if cfg.group_by_length else data.train,
        eval_dataset=data.heldout,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=list(callbacks),
    )


def train_reward_model(
    stage: str,
    base: ModelRef,
    data: RewardData,
    cfg: RewardModelConfig,
    out_dir: Path,
    seed: int,
    device: str = "auto",
    *,
    save: str = "merged",
    init_from: Path | None = None,
    work_dir: Path | None = None,
    save_steps: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume) one reward-model stage (``"pmp"`` or ``"reward_model"``) into ``out_dir``."""
    device = training_device(device, cfg.lora, stage)
    if len(data.train) == 0:
        raise ValueError(f"{stage}: no training pairs")
    kind = "adapter" if (save == "adapter" and cfg.lora is not None) else "merged"
    manifest = RewardModelManifest(kind=kind, base_model_id=base.model_id, revision=base.revision,
                                   trust_remote_code=base.trust_remote_code, max_seq_len=cfg.max_seq_len,
                                   cpu_bf16_autocast=device == "cpu" and use_bf16_autocast(cfg.cpu_precision),
                                   reviewer_layout=cfg.reviewer_layout)
    inputs = {
        "base_model": base_model_stamp(base.model_id, base.revision),
        "init_from": base_model_stamp(str(init_from)) if init_from else None,
        "data": data_hash(data.train),
        "heldout": data_hash(data.heldout) if data.heldout is not None else None,
        "cfg": cfg.model_dump(mode="json"),
        "save": kind,
        "seed": seed,
        "device": device,
    }
    log(f"{stage}: {len(data.train)} pairs ({len(data.heldout or [])} held out), "
        f"{describe_mode(cfg.lora)} on {device}")

    def build(work: Path, cbs: list[TrainerCallback]):
        return build_reward_trainer(base, data, cfg, work, seed, device, [*cbs, *callbacks], init_from,
                                    save_steps)

    def save_model(trainer, model, directory: Path) -> None:
        save_reward_model(model, trainer.processing_class, directory, manifest)

    result = run_training(
        stage, build, inputs, out_dir, work_dir=work_dir, log=log,
        plot_title="{stage}: {steps} steps", loss_label="Bradley–Terry loss",
        metrics=("accuracy",), log_fields={"base_model_id": base.model_id},
        save_model=save_model,
    )
    result.is_adapter = kind == "adapter"  # a merged save is a whole model, whatever trained it
    return result
