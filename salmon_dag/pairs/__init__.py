"""Response pairs (SALMON §1.2): two sampled SFT-policy responses per prompt, the judge's input.

``config.py`` holds the stage's profile section, ``stage.py`` its method and declaration; names
are imported from them on first use (``salmon_dag.lazy``), so loading a profile needs no polars.
"""

from salmon_dag.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"PairsConfig": "config"}, default="stage")
