"""The reward model's training examples (SALMON §1.3): the judgements aggregated.

``config.py`` holds the stage's profile section, ``stage.py`` its method and declaration; names
are imported from them on first use (``salmon_dag.lazy``), so loading a profile needs no polars.
"""

from salmon_dag.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"AggregationConfig": "config"}, default="stage")
