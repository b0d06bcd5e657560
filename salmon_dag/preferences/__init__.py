"""Synthetic preferences (SALMON §1.2): every response pair judged under every reward-model principle.

``config.py`` holds the stage's profile section, ``stage.py`` its method and declaration; names
are imported from them on first use (``salmon_dag.lazy``), so loading a profile needs no polars.
"""

from salmon_dag.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"JudgeConfig": "config"}, default="stage")
