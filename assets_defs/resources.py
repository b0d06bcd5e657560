"""The one resource every asset uses: settings (profile, warehouse, principles) for this run."""

from __future__ import annotations

import dagster as dg

from salmon_dag.config import Profile
from salmon_dag.settings import Settings
from salmon_dag.stage import DataStage, StageInputs, TrainingStage
from salmon_dag.warehouse import Warehouse


class SalmonResource(dg.ConfigurableResource):
    profile: str
    warehouse_dir: str
    principles_dir: str

    @classmethod
    def from_settings(cls, settings: Settings) -> "SalmonResource":
        return cls(
            profile=settings.profile_name,
            warehouse_dir=settings.warehouse_dir,
            principles_dir=settings.principles_dir,
        )

    def settings(self) -> Settings:
        return Settings(self.profile, self.warehouse_dir, self.principles_dir)

    def load_profile(self) -> Profile:
        return self.settings().profile

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.warehouse_dir)

    def stage_inputs(self, stage: DataStage | TrainingStage) -> StageInputs:
        """What ``stage`` declared it reads, from this run's profile, warehouse and principles."""
        settings = self.settings()
        return StageInputs(stage.name, stage.reads, settings.profile, self.warehouse, settings.principles_path)
