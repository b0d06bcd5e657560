"""Training stages (principle-engraving SFT, ...). Plain Python: no dagster here.

Names are imported on first use: torch/transformers/TRL take seconds to import, and the Dagster
definitions only need to know that the module exists.
"""

from importlib import import_module

_HOME = {
    "SFTResult": "sft",
    "TURN_SEPARATOR_END": "sft",
    "default_work_dir": "sft",
    "peft_config": "sft",
    "quantization_config": "sft",
    "sft_examples": "sft",
    "build_sft_trainer": "sft",
    "train_sft": "sft",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
