"""salmon: SALMON (Self-Alignment with Instructable Reward Models) as a Dagster data pipeline.

This package holds the method's algorithms as plain Python (no dagster import); the Dagster layer
lives in ``assets_defs``.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes' CPU backend (QLoRA in a CPU rehearsal) warns at import, in every process that
# imports peft, that it cannot download an optional faster kernel from the Hub; its own kernel runs
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
