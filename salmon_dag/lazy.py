"""Packages that import their pieces on first use.

The profile loader (``config.py``) imports each stage's config module; importing a package runs its
``__init__`` first, so a stage package whose method needs polars, torch or transformers must not
import them there. Its ``__init__`` sets ``__getattr__ = lazy_exports(__name__, ...)`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str], default: str | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` comes from ``package.<homes[name]>``, or
    from ``package.<default>`` for any other public name, imported when first asked for."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name, default if not name.startswith("__") else None)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            return getattr(import_module(f"{package}.{home}"), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__
