"""The contract of a stage: what it reads, how it runs, what it returns.

Every stage declares what it reads (:class:`Reads`: profile sections, warehouse assets); the
Dagster layer derives its asset's dependencies and code version from that declaration and hands
the stage only those inputs (:class:`StageInputs`, :meth:`StageRun.section`), so what a stage reads
and what makes its asset stale cannot drift. A stage that runs in its asset's process (tables, the
base model) is a :class:`DataStage`; a training stage is a :class:`TrainingStage`, which the launcher
can run on several processes or in a pod.

A training-stage module declares one :class:`TrainingStage` and registers it. The launcher and the job
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
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)
Log = Callable[[str], None]


# --------------------------------------------------------------------------- what a stage reads
@dataclass(frozen=True)
class Reads:
    """What a stage reads. ``sections``: profile sections or dotted fields (``"engine.device"``);
    ``assets``: warehouse tables and models by asset name (``"prompt_pool"``, ``"base_model"``,
    ``"principles/rl"``); ``chosen``: assets the profile picks (the model ``judge.model`` names).
    The Dagster layer makes each named asset a dependency and hashes the sections into the code
    version; :class:`StageInputs` hands the stage only what is named here."""

    sections: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    chosen: Callable[[Any], tuple[str, ...]] | None = None

    def all_assets(self, profile: Any) -> tuple[str, ...]:
        """``assets`` plus those ``profile`` chooses."""
        return (*self.assets, *(self.chosen(profile) if self.chosen is not None else ()))


@dataclass(frozen=True)
class TableResult:
    """What a data stage returns: its table, metadata for the materialization, and the lineage it
    knows (the principle set's hash and the model it used, where there is one)."""

    table: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    principle_hash: str | None = None
    model_id: str | None = None


@dataclass(frozen=True)
class DataStage:
    """A stage that runs in its asset's process (the prompt pool, the base model, the Self-Align
    data, pairs, judgements, the reward model's examples and evaluation, benchmarks): the asset it
    writes, what it reads, and the plain function that holds its method."""

    name: str
    reads: Reads
    run: Callable[..., Any]


class StageInputs:
    """The warehouse as a stage sees it: the tables, models and principle sets its :class:`Reads`
    names, and nothing else (an undeclared read is refused, so a stage cannot depend on an asset
    without making it a dependency)."""

    def __init__(self, stage_name: str, reads: Reads, profile: Any, warehouse: Any, principles_dir: Path | str):
        self.stage, self.reads, self.warehouse, self.principles_dir = stage_name, reads, warehouse, Path(principles_dir)
        self.names, self._profile = set(reads.all_assets(profile)), profile

    @property
    def seed(self) -> int:
        """The profile's seed (every stage's code version counts it)."""
        return self._profile.seed

    def section(self, name: str) -> Any:
        """Declared profile section (or dotted field) ``name``."""
        if name not in self.reads.sections:
            raise KeyError(f"stage {self.stage} reads profile section {name!r} but did not declare it (Reads.sections)")
        return self._profile.section(name)

    def _check(self, name: str) -> None:
        if name not in self.names:
            raise KeyError(f"stage {self.stage} reads {name!r} but did not declare it (Reads.assets)")

    def table(self, name: str):
        """Table ``name`` (polars)."""
        self._check(name)
        return self.warehouse.read_table(name)

    def model(self, name: str):
        """The :class:`~salmon_dag.model_ref.ModelRef` model asset ``name`` wrote."""
        from salmon_dag.model_ref import read_model_ref

        self._check(name)
        return read_model_ref(self.warehouse, name)

    def principles(self, kind: str):
        """The principle file of ``kind``, checked against its materialized table (``principles/<kind>``)."""
        from salmon_dag.principles import checked_principles, table_name

        self._check(table_name(kind))
        return checked_principles(self.warehouse, self.principles_dir, kind)

    def partial(self):
        """Where this stage saves the finished chunks of a run until its table is written
        (:class:`~salmon_dag.resume.ChunkStore`): a killed run resumes from them."""
        return self.warehouse.partial(self.stage)

    def resume_key(self, ref) -> list:
        """What a saved chunk of model calls depends on besides its own inputs: the model's
        identity and the engine settings (declared ``engine`` section)."""
        return [ref.identity(), self.section("engine").model_dump(mode="json")]

    def previous(self):
        """The stage's own last output (its cache), or None when there is none."""
        from salmon_dag.warehouse import WarehouseError

        try:
            return self.warehouse.read_table(self.stage)
        except WarehouseError:
            return None


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
    declared (a launched rank imports it); ``reads``: the profile sections its run reads and the
    warehouse assets its asset resolves into ``inputs``, the input keys the asset must give;
    ``run``: the training, on every rank; ``encode`` / ``decode``: its result as JSON and back
    (rank 0's result crosses the process boundary)."""

    name: str
    module: str
    reads: Reads
    inputs: tuple[str, ...]
    run: Callable[[StageRun], R]
    encode: Callable[[R], dict[str, Any]]
    decode: Callable[[dict[str, Any]], R]

    @property
    def sections(self) -> tuple[str, ...]:
        """The profile sections a job of this stage carries."""
        return self.reads.sections

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
