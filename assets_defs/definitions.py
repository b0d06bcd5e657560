"""The Dagster Definitions of salmon (loaded by workspace.yaml, `dagster dev` and the CLI).

Settings come from the environment (SALMON_PROFILE, SALMON_WAREHOUSE, SALMON_PRINCIPLES), so the
UI and the CLI started with the same environment share one project and one instance.
"""

from __future__ import annotations

import warnings

import dagster as dg

from assets_defs.automation import build_automation
from assets_defs.base_model import build_base_model_assets
from assets_defs.benchmarks import build_benchmark_assets
from assets_defs.preferences import build_preference_assets
from assets_defs.principles import build_principle_assets
from assets_defs.prompt_pool import build_prompt_pool_assets
from assets_defs.resources import SalmonResource
from assets_defs.reward_model import build_reward_model_assets
from assets_defs.rl import build_rl_assets
from assets_defs.self_align import build_self_align_assets
from salmon_dag.settings import Settings

# We use a few beta APIs on purpose (multi observable sources, AssetSelection include_sources);
# their warnings, raised while the definitions are built, would drown the CLI output.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

MAIN_JOB = "salmon_main"


def build_definitions(settings: Settings) -> dg.Definitions:
    automation = dg.AutomationCondition.eager()
    assets_and_checks = [
        *build_principle_assets(settings),
        *build_prompt_pool_assets(settings),
        *build_base_model_assets(settings),
        *build_self_align_assets(settings),
        *build_preference_assets(settings),
        *build_reward_model_assets(settings),
        *build_rl_assets(settings),
        *build_benchmark_assets(settings),
    ]
    assets = [
        a.with_attributes(automation_condition=automation) if isinstance(a, dg.AssetsDefinition) and a.is_executable and not a.is_observable else a
        for a in assets_and_checks
    ]
    main_job = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.all(),
        description="The whole SALMON asset graph that exists so far.",
    )
    return dg.Definitions(
        assets=[a for a in assets if not isinstance(a, dg.AssetChecksDefinition)],
        asset_checks=[a for a in assets if isinstance(a, dg.AssetChecksDefinition)],
        jobs=[main_job],
        sensors=build_automation(settings),
        resources={"salmon": SalmonResource.from_settings(settings)},
    )


defs = build_definitions(Settings.from_env())
