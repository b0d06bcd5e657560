"""LoRA / QLoRA set-up shared by the training stages (SFT, reward model, PPO).

The profile's ``lora`` section becomes a ``peft.LoraConfig`` (and a bitsandbytes config for
QLoRA); :func:`load_for_training` loads any ``AutoModelFor*`` class the way training needs it.
Plain Python: no dagster import here.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from transformers import BitsAndBytesConfig, PreTrainedModel

from salmon_dag.base_model import loading
from salmon_dag.config import LoraConfig, TrainingConfig


def quantization_config(lora_cfg: LoraConfig | None) -> BitsAndBytesConfig | None:
    """The bitsandbytes config for QLoRA (``lora.quantization``), or None for no quantization.

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
    raise ValueError(f"lora.quantization: unknown value {lora_cfg.quantization!r}")


def peft_config(lora_cfg: LoraConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
    """``peft.LoraConfig`` from the profile's LoRA section.

    ``task_type`` "SEQ_CLS" with ``modules_to_save=["score"]`` suits a reward model: the new
    scalar head trains in full and is saved with the adapter.
    """
    import peft

    return peft.LoraConfig(
        task_type=task_type,
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        bias="none",
    )


def describe_mode(lora_cfg: LoraConfig | None) -> str:
    """How the weights train, for log lines: ``LoRA r=8``, ``LoRA r=64 (4bit)`` or ``full fine-tuning``."""
    if lora_cfg is None:
        return "full fine-tuning"
    quant = f" ({lora_cfg.quantization})" if lora_cfg.quantization != "none" else ""
    return f"LoRA r={lora_cfg.r}{quant}"


def check_quantization_runtime(lora_cfg: LoraConfig | None, device: str, stage: str) -> None:
    """Fail in one line when QLoRA is configured where it cannot run: without bitsandbytes, or on a
    device other than CUDA and the CPU (bitsandbytes >= 0.48 quantizes on the CPU too: slower, the
    same arithmetic, which is what a CPU rehearsal of a QLoRA profile runs)."""
    if lora_cfg is None or lora_cfg.quantization == "none":
        return
    if device not in ("cuda", "cpu") or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            f"{stage}.lora.quantization: '{lora_cfg.quantization}' (QLoRA) needs bitsandbytes on a CUDA GPU or "
            f"the CPU (pip install -e '.[gpu]'); set it to 'none' to train without quantization (device: {device})"
        )


def training_device(device: str, lora_cfg: LoraConfig | None, stage: str) -> str:
    """``device`` resolved ("auto" -> cuda when present), checked against the hardware and QLoRA."""
    device = loading.resolve_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{stage}: device 'cuda' requested but no CUDA GPU is available")
    check_quantization_runtime(lora_cfg, device, stage)
    return device


def load_for_training(
    auto_cls: Any,
    model_id: str,
    revision: str | None,
    trust_remote_code: bool,
    cfg: TrainingConfig,
    device: str,
    **from_pretrained_kwargs: Any,
) -> PreTrainedModel:
    """``auto_cls.from_pretrained`` (e.g. ``AutoModelForCausalLM``, or
    ``AutoModelForSequenceClassification`` with ``num_labels=1``) placed and typed for training.

    QLoRA: 4/8-bit weights on the current GPU (or the CPU), prepared for k-bit training. Otherwise CPU trains
    in float32; CUDA keeps a frozen bf16 base under LoRA, and float32 master weights (bf16
    autocast) for full fine-tuning. ``device`` is already resolved (see :func:`training_device`).
    """
    qconf = quantization_config(cfg.lora)
    if qconf is not None:
        import peft

        # 4/8-bit weights cannot be moved with .to(): they are placed at load time.
        place = torch.cuda.current_device() if device == "cuda" else "cpu"
        model = loading.load_pretrained(
            auto_cls, model_id, revision, trust_remote_code,
            dtype=torch.bfloat16, quantization_config=qconf, device_map={"": place},
            **from_pretrained_kwargs,
        )
        # non-reentrant checkpointing: what torch recommends (the same gradients; reentrant warns)
        return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
    dtype = torch.bfloat16 if device == "cuda" and cfg.lora is not None else torch.float32
    model = loading.load_pretrained(auto_cls, model_id, revision, trust_remote_code, dtype=dtype, **from_pretrained_kwargs)
    return model.to(device)
