"""salmon: SALMON (Self-Alignment with Instructable Reward Models) as a Dagster data pipeline.

This package holds the method's algorithms as plain Python (no dagster import); the Dagster layer
lives in ``assets_defs``.
"""

__version__ = "0.1.0"
