"""One declaration per asset: its key, its stage version, and what its stage reads (the stage's
:class:`~salmon_dag.stage.Reads`, declared beside the method in ``salmon_dag``), plus any other
input of its code version.

Dagster's dependencies, the code version and the lineage's config hash are all derived from the
stage's declaration, so what a stage reads, what makes its asset stale and what its rows record as
their config cannot drift apart; no asset lists its dependencies or sections by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets_defs.tables import materialize_table
from salmon_dag.config import Profile, stable_hash
from salmon_dag.lineage import DataFiles, Lineage
from salmon_dag.rehearsal import stage_record
from salmon_dag.settings import Settings
from salmon_dag.stage import Reads, TableResult
from salmon_dag.warehouse import Warehouse


@dataclass(frozen=True)
class AssetDecl:
    """``reads``: the stage's declaration (profile sections, with the seed always counted beside
    them; the assets it reads, by name). ``extra_version`` adds inputs that are not profile config
    or assets (a template version); it is read when the definitions are built. ``data_files``: the
    local data files it reads, whose content counts too (after ``extra_version``), recorded in the
    artifact's lineage so that an optional one missing on this machine does not make it stale."""

    key: dg.AssetKey
    stage_version: str
    reads: Reads = Reads()
    extra_version: Callable[[Settings], str] | None = None
    data_files: Callable[[Profile], DataFiles] | None = None

    @property
    def sections(self) -> tuple[str, ...]:
        return self.reads.sections

    def config_hash(self, profile: Profile) -> str:
        """Hash of the profile config this asset reads (of nothing, when it reads none)."""
        return profile.section_hash(*self.sections) if self.sections else stable_hash({})

    def code_version(self, settings: Settings) -> str:
        parts = [self.stage_version, self.config_hash(settings.profile)]
        extra = self.extra_version(settings) if self.extra_version is not None else ""
        if self.data_files is not None:
            files = self.data_files(settings.profile).version(self._built_data_files(settings.warehouse))
            extra = f"{extra}.{files}" if extra else files
        if extra:  # empty: nothing beyond the config (code versions stay those of before)
            parts.append(extra)
        return ".".join(parts)

    def _built_data_files(self, warehouse: Warehouse) -> dict | None:
        """The data files the materialized artifact recorded (its lineage), or None."""
        import json

        from salmon_dag.model_ref import manifest_path

        name = self.key.to_user_string()
        try:
            manifest = manifest_path(warehouse, name)
            if manifest.is_file():
                return json.loads(manifest.read_text()).get("lineage", {}).get("data_files")
            if warehouse.table_path(name).is_file():
                return warehouse.read_lineage(name).get("data_files")
        except (OSError, ValueError):
            pass  # unreadable: counted as it is (salmon status reports the damage)
        return None

    def dependencies(self, settings: Settings) -> list[dg.AssetKey]:
        """The assets the stage reads, those the profile chooses included."""
        return [dg.AssetKey.from_user_string(name) for name in self.reads.all_assets(settings.profile)]

    def asset(self, settings: Settings, **kwargs: Any) -> Callable:
        """``@dg.asset`` with this declaration's key, deps and code version (``kwargs``: the rest)."""
        return dg.asset(key=self.key, deps=self.dependencies(settings), code_version=self.code_version(settings), **kwargs)

    def spec(self, settings: Settings, **kwargs: Any) -> dg.AssetSpec:
        """The ``dg.AssetSpec`` of this declaration, for multi-assets."""
        return dg.AssetSpec(self.key, deps=self.dependencies(settings), code_version=self.code_version(settings), **kwargs)

    def lineage(
        self,
        context: dg.AssetExecutionContext,
        profile: Profile,
        principle_hash: str | None = None,
        model_id: str | None = None,
    ) -> Lineage:
        """Lineage of this run's output: run id, this declaration's config hash, the code version."""
        return Lineage(
            run_id=context.run.run_id,
            config_hash=self.config_hash(profile),
            code_version=context.assets_def.code_versions_by_key.get(self.key) or "",
            principle_hash=principle_hash,
            model_id=model_id,
            rehearsal=stage_record(profile, self.sections) if profile.rehearsal is not None else None,
            data_files=self.data_files(profile).record() if self.data_files is not None else None,
        )

    def materialize(self, context: dg.AssetExecutionContext, warehouse: Warehouse, profile: Profile,
                    made: TableResult) -> dg.MaterializeResult:
        """A data stage's result as this asset's table, with its lineage and metadata (a dict is
        shown as JSON in the UI)."""
        lineage = self.lineage(context, profile, principle_hash=made.principle_hash, model_id=made.model_id)
        metadata = {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in made.metadata.items()}
        return materialize_table(warehouse, self.key, made.table, lineage, extra_metadata=metadata)
