"""Training stages (principle-engraving SFT, ...) and the harness they share. No dagster here.

``harness`` runs any HF/TRL trainer resumably and saves its model atomically; ``lora`` loads
models for (Q)LoRA or full fine-tuning; ``checkpoints`` and ``reporting`` are the pieces the
harness is made of. Names are imported on first use: torch/transformers/TRL take seconds to
import, and the Dagster definitions only need to know that the module exists.
"""

from importlib import import_module

_HOME = {
    # stages
    "TURN_SEPARATOR_END": "sft",
    "sft_examples": "sft",
    "build_sft_trainer": "sft",
    "train_sft": "sft",
    # harness
    "TrainResult": "harness",
    "TrainerFactory": "harness",
    "run_training": "harness",
    "common_training_args": "harness",
    "expected_steps": "harness",
    # (Q)LoRA and model loading
    "quantization_config": "lora",
    "peft_config": "lora",
    "check_quantization_runtime": "lora",
    "training_device": "lora",
    "load_for_training": "lora",
    # checkpoints and reporting
    "default_work_dir": "checkpoints",
    "fingerprint": "checkpoints",
    "find_resumable": "checkpoints",
    "ProgressLog": "reporting",
    "plot_curves": "reporting",
    # the CPU's numeric path
    "cpu_has_native_bf16": "precision",
    "use_bf16_autocast": "precision",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
