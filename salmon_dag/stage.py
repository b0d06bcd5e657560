"""The contract of a training stage: what it reads, how it runs, what it returns.

A stage module declares one :class:`TrainingStage` and registers it. The launcher and the job
files (``salmon_dag.launch``) run any registered stage without naming it: a job records the
stage's name and module, a launched rank imports that module, finds the stage and calls its
``run``. The stage declares the profile sections its run reads; a job carries exactly those and
the run sees only those (``StageRun.section``), and the Dagster layer hashes the same sections into
the asset's code version, so what the run reads and what makes its asset stale cannot drift.

Declarations stay cheap to import (the Dagster definitions import them): a stage's ``run`` imports
torch and the trainers when it is called. Plain Python: no dagster import here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)
Log = Callable[[str], None]


@dataclass(frozen=True)
class StageRun:
    """One run of a stage, as its ``run`` sees it: where to write, the seed and device, the
    declared profile sections (name -> JSON value), the inputs the asset resolved (file paths,
    model references: JSON values) and where to log."""

    out_dir: Path
    seed: int
    device: str
    config: dict[str, Any]
    inputs: dict[str, Any]
    log: Log = print

    def section(self, name: str, cls: type[M]) -> M:
        """Declared section ``name`` validated as ``cls``."""
        if name not in self.config:
            raise KeyError(f"the stage reads profile section {name!r} but did not declare it")
        return cls.model_validate(self.config[name])


@dataclass(frozen=True)
class TrainingStage(Generic[R]):
    """``name``: the stage's job name (and its main profile section); ``module``: where it is
    declared (a launched rank imports it); ``sections``: the profile sections or dotted fields
    (``"engine.device"``) its run reads; ``inputs``: the input keys the asset must give;
    ``run``: the training, on every rank; ``encode`` / ``decode``: its result as JSON and back
    (rank 0's result crosses the process boundary)."""

    name: str
    module: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    run: Callable[[StageRun], R]
    encode: Callable[[R], dict[str, Any]]
    decode: Callable[[dict[str, Any]], R]

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        missing, unknown = set(self.inputs) - set(inputs), set(inputs) - set(self.inputs)
        if missing or unknown:
            raise ValueError(f"stage {self.name}: inputs {sorted(inputs)} do not match its declared "
                             f"{sorted(self.inputs)}")


_REGISTRY: dict[str, TrainingStage] = {}


def register(stage: TrainingStage[R]) -> TrainingStage[R]:
    """Make ``stage`` findable by name; a second stage of the same name from another module is an error."""
    known = _REGISTRY.get(stage.name)
    if known is not None and known.module != stage.module:
        raise ValueError(f"stage {stage.name!r} is declared twice: in {known.module} and {stage.module}")
    _REGISTRY[stage.name] = stage
    return stage


def find(name: str, module: str) -> TrainingStage:
    """The stage ``name`` declared in ``module`` (imported here if it is not yet)."""
    if name not in _REGISTRY:
        try:
            import_module(module)
        except ImportError as exc:
            raise ValueError(f"unknown stage {name!r}: cannot import its module {module!r} ({exc})") from None
    if name not in _REGISTRY:
        raise ValueError(f"unknown stage {name!r}: module {module!r} declares none of that name")
    return _REGISTRY[name]


# --------------------------------------------------------------------------- results as JSON
def plain(result: Any) -> dict[str, Any]:
    """A result dataclass as JSON-able data (its ``out_dir`` a string)."""
    out = dataclasses.asdict(result)
    out["out_dir"] = str(out["out_dir"])
    return out


def from_plain(cls: type[R], data: dict[str, Any]) -> R:
    """:func:`plain`'s inverse: ``out_dir`` back to a path, ``losses`` (when the result has them)
    back to (step, loss) tuples."""
    fields = {**data, "out_dir": Path(data["out_dir"])}
    if "losses" in fields:
        fields["losses"] = [tuple(p) for p in fields["losses"]]
    return cls(**fields)
