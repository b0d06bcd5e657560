"""Where a run reads and writes: profile, warehouse root and principles folder.

Each has a default, an environment variable, and a CLI option (the CLI sets the variable, so
``dagster dev`` and the CLI started with the same environment see the same project).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from salmon_dag.config import DEFAULT_PROFILE, Profile, load_profile
from salmon_dag.warehouse import Warehouse, atomic_path

ENV_PROFILE = "SALMON_PROFILE"
ENV_WAREHOUSE = "SALMON_WAREHOUSE"
ENV_PRINCIPLES = "SALMON_PRINCIPLES"
# The pool of every step that loads a model onto the accelerator (GPU); its limit is set in the
# project's instance from ``instance.accelerator_pool_limit``.
ACCELERATOR_POOL = "accelerator"


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
        write_instance_config(home / "dagster.yaml", self.profile.instance.accelerator_pool_limit)
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


def write_instance_config(path: Path, accelerator_pool_limit: int) -> None:
    """Create or update the project's ``dagster.yaml``: no telemetry, no community sign-up dialog
    over the graph, and op-level pool limits with ``accelerator_pool_limit`` as the default limit
    (the only pool is the accelerator's). Other settings a user added are kept."""
    config = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    wanted = dict(config)
    wanted.setdefault("telemetry", {"enabled": False})
    wanted.setdefault("nux", {"enabled": False})
    concurrency = dict(wanted.get("concurrency") or {})
    pools = dict(concurrency.get("pools") or {})
    pools.update(default_limit=accelerator_pool_limit, granularity=pools.get("granularity", "op"))
    wanted["concurrency"] = {**concurrency, "pools": pools}
    if wanted != config:
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(wanted, sort_keys=False))
