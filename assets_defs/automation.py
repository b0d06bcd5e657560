"""Keeping the graph fresh: principle-file observation and declarative automation.

``principle_file_sensor`` hashes the principle files each tick and records an observation when a
hash changes, which is what makes dependents stale. ``salmon_automation`` (off by default; switch
it on in the UI) then rebuilds exactly the stale assets under ``dagster dev``.
"""

import dagster as dg

from assets_defs.principles import observe_versions
from salmon_dag.settings import Settings

# The tag under which Dagster reads an observation's data version.
DATA_VERSION_TAG = "dagster/data_version"


def changed_versions(instance: dg.DagsterInstance, versions: dict[dg.AssetKey, str]) -> dict[dg.AssetKey, str]:
    """The keys whose data version differs from the last one the instance recorded."""
    changed = {}
    for key, version in versions.items():
        record = instance.get_latest_data_version_record(key, is_source=True)
        last = None
        if record is not None:
            event = record.asset_observation or record.asset_materialization
            last = (event.tags or {}).get(DATA_VERSION_TAG) if event else None
        if last != version:
            changed[key] = version
    return changed


def record_observations(instance: dg.DagsterInstance, versions: dict[dg.AssetKey, str]) -> list[dg.AssetKey]:
    """Report an observation for each key whose data version differs from the last one recorded."""
    changed = changed_versions(instance, versions)
    for key, version in changed.items():
        instance.report_runless_asset_event(dg.AssetObservation(asset_key=key, tags={DATA_VERSION_TAG: version}))
    return list(changed)


def build_automation(settings: Settings) -> list:
    interval = settings.profile.instance.sensor_interval_s

    @dg.sensor(
        name="principle_file_sensor",
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Observes the principle files; an edit makes the dependent assets stale.",
    )
    def principle_file_sensor(context: dg.SensorEvaluationContext):
        # against the instance, not a cursor of its own: what `salmon run`/`status` observed
        # already is not observed again
        changed = changed_versions(context.instance, observe_versions(settings))
        if not changed:
            return dg.SkipReason("principle files unchanged")
        return dg.SensorResult(
            asset_events=[dg.AssetObservation(asset_key=k, tags={DATA_VERSION_TAG: v}) for k, v in changed.items()]
        )

    automation = dg.AutomationConditionSensorDefinition(
        "salmon_automation",
        target=dg.AssetSelection.all(include_sources=True),
        default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=interval,
        description="Rebuilds stale assets (declarative automation, eager); turn on in the UI.",
    )
    return [principle_file_sensor, automation]
