"""Where a run reads and writes: profile, warehouse root and principles folder.

Each has a default, an environment variable, and a CLI option (the CLI sets the variable, so
``dagster dev`` and the CLI started with the same environment see the same project).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from salmon_dag.config import DEFAULT_PROFILE, Profile, load_profile
from salmon_dag.warehouse import Warehouse

ENV_PROFILE = "SALMON_PROFILE"
ENV_WAREHOUSE = "SALMON_WAREHOUSE"
ENV_PRINCIPLES = "SALMON_PRINCIPLES"
# the project's Dagster instance: no telemetry, and no community sign-up dialog over the graph
NUX_OFF = "nux:\n  enabled: false\n"
INSTANCE_CONFIG = "telemetry:\n  enabled: false\n" + NUX_OFF


@dataclass(frozen=True)
class Settings:
    profile_name: str = DEFAULT_PROFILE
    warehouse_dir: str = "warehouse"
    principles_dir: str = "principles"

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            profile_name=os.environ.get(ENV_PROFILE) or DEFAULT_PROFILE,
            warehouse_dir=os.environ.get(ENV_WAREHOUSE) or "warehouse",
            principles_dir=os.environ.get(ENV_PRINCIPLES) or "principles",
        )

    def export(self) -> None:
        """Publish these settings to the environment (and DAGSTER_HOME inside the warehouse)."""
        os.environ[ENV_PROFILE] = self.profile_name
        os.environ[ENV_WAREHOUSE] = str(Path(self.warehouse_dir).resolve())
        os.environ[ENV_PRINCIPLES] = str(Path(self.principles_dir).resolve())
        home = self.warehouse.dagster_home
        home.mkdir(parents=True, exist_ok=True)
        cfg = home / "dagster.yaml"
        if not cfg.exists():
            cfg.write_text(INSTANCE_CONFIG)
        elif "nux:" not in (text := cfg.read_text()):  # instances created before the sign-up dialog was off
            cfg.write_text(text.rstrip("\n") + "\n" + NUX_OFF)
        os.environ["DAGSTER_HOME"] = str(home)

    @cached_property
    def profile(self) -> Profile:
        return load_profile(self.profile_name)

    @cached_property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.warehouse_dir)

    @property
    def principles_path(self) -> Path:
        return Path(self.principles_dir).resolve()
