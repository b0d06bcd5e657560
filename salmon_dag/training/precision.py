"""The CPU's numeric path: whether training and scoring run under bf16 autocast.

Every stage that trains or scores on the CPU (pre-training, the reward model, PPO) asks here, so
"auto" means the same on every path: bf16 where the CPU computes it in hardware, float32 elsewhere.
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probes: assume not
        return False


def use_bf16_autocast(precision: str) -> bool:
    """Whether CPU work runs under bf16 autocast for ``precision`` (auto / float32 / bfloat16)."""
    return cpu_has_native_bf16() if precision == "auto" else precision == "bfloat16"
