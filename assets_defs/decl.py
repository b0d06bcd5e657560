"""One declaration per asset of what it depends on: upstream assets, the profile sections it
reads, its stage version (and any other input of its code version).

Dagster's code version and the lineage's config hash are both derived from it, so what makes an
asset stale and what its rows record as their config cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from salmon_dag.config import Profile, stable_hash
from salmon_dag.lineage import Lineage
from salmon_dag.settings import Settings


@dataclass(frozen=True)
class AssetDecl:
    """``sections`` are profile keys or dotted fields (``"engine.device"``) the asset reads; the
    seed always counts with them. ``extra_version`` adds inputs that are not profile config (a
    data files' hash, a template version); it is read when the definitions are built."""

    key: dg.AssetKey
    stage_version: str
    sections: tuple[str, ...] = ()
    deps: tuple[dg.AssetKey, ...] = ()
    extra_version: Callable[[Settings], str] | None = None
    # dependencies the profile chooses (the pipeline model judge.model names)
    profile_deps: Callable[[Settings], tuple[dg.AssetKey, ...]] | None = None

    def config_hash(self, profile: Profile) -> str:
        """Hash of the profile config this asset reads (of nothing, when it reads none)."""
        return profile.section_hash(*self.sections) if self.sections else stable_hash({})

    def code_version(self, settings: Settings) -> str:
        parts = [self.stage_version, self.config_hash(settings.profile)]
        extra = self.extra_version(settings) if self.extra_version is not None else ""
        if extra:  # empty: nothing beyond the config (code versions stay those of before)
            parts.append(extra)
        return ".".join(parts)

    def dependencies(self, settings: Settings) -> list[dg.AssetKey]:
        """``deps`` plus those the profile chooses."""
        return [*self.deps, *(self.profile_deps(settings) if self.profile_deps is not None else ())]

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
        )
