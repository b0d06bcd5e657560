"""Stage 0: the principle files, observed as sources, and their validated tables.

Each file is its own observable source asset whose data version is the hash of its parsed YAML;
each table asset depends on its file only, so editing ``rl.yaml`` makes only the RL side stale.
"""

import dagster as dg

from assets_defs.decl import AssetDecl
from assets_defs.resources import SalmonResource
from assets_defs.tables import materialize_table, read_table
from salmon_dag.principles import (
    PRINCIPLE_KINDS,
    file_hash,
    principle_path,
    table_stage,
)
from salmon_dag.settings import Settings

# "2": language_match rules gained min_confidence (default 0.8), which changes the parsed hash of
# a file that did not change; the tables are rebuilt, and with them everything the rule decides
STAGE_VERSION = "2"
GROUP = "principles"

FILE_KEYS = {kind: dg.AssetKey(["principle_files", kind]) for kind in PRINCIPLE_KINDS}
TABLE_KEYS = {kind: dg.AssetKey(["principles", kind]) for kind in PRINCIPLE_KINDS}
TABLE_STAGES = {kind: table_stage(kind) for kind in PRINCIPLE_KINDS}
TABLE_ASSETS = {kind: AssetDecl(TABLE_KEYS[kind], STAGE_VERSION, reads=TABLE_STAGES[kind].reads) for kind in PRINCIPLE_KINDS}

_DESCRIPTIONS = {
    "self_align": "Self-Align principles and in-context exemplars (principles/self_align.yaml).",
    "reward_model": "Reward-model principles with definition and negative definition (principles/reward_model.yaml).",
    "rl": "RL-time principles, weighted and grouped by question type (principles/rl.yaml).",
}


def observe_versions(settings: Settings) -> dict[dg.AssetKey, str]:
    """Current data version of each principle file (hash of the parsed YAML)."""
    versions = {}
    for kind, key in FILE_KEYS.items():
        path = principle_path(settings.principles_path, kind)
        versions[key] = file_hash(path) if path.is_file() else "missing"
    return versions


def build_principle_assets(settings: Settings) -> list:
    @dg.multi_observable_source_asset(
        name="principle_files",
        specs=[
            dg.AssetSpec(key, description=f"Source file: {_DESCRIPTIONS[kind]}", group_name=GROUP, kinds={"yaml"})
            for kind, key in FILE_KEYS.items()
        ],
        can_subset=True,
    )
    def principle_files(context: dg.AssetExecutionContext, salmon: SalmonResource):
        versions = observe_versions(salmon.settings())
        for key in context.selected_asset_keys:
            yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion(versions[key]))

    @dg.multi_asset(
        name="principles",
        specs=[
            decl.spec(settings, description=_DESCRIPTIONS[kind], group_name=GROUP, kinds={"parquet"})
            for kind, decl in TABLE_ASSETS.items()
        ],
        can_subset=True,
    )
    def principles(context: dg.AssetExecutionContext, salmon: SalmonResource):
        """Validate each selected principle file and store it as a table (data version = file hash)."""
        settings = salmon.settings()
        for kind, decl in TABLE_ASSETS.items():
            if decl.key not in context.selected_asset_keys:
                continue
            stage = TABLE_STAGES[kind]
            made = stage.run(salmon.stage_inputs(stage), kind)
            path = made.metadata["principle_file"]
            context.log.info(f"{path}: {made.table.height} entries, hash {made.principle_hash}")
            yield materialize_table(
                salmon.warehouse,
                decl.key,
                made.table,
                decl.lineage(context, settings.profile, principle_hash=made.principle_hash),
                data_version=made.principle_hash,
                extra_metadata={"principle_file": dg.MetadataValue.path(path)},
            )

    checks = [_non_empty_unique_names_check(kind, key) for kind, key in TABLE_KEYS.items()]
    return [principle_files, principles, *checks]


def _non_empty_unique_names_check(kind: str, key: dg.AssetKey):
    @dg.asset_check(asset=key, name="has_unique_principles", description="At least one principle; names unique.")
    def _check(salmon: SalmonResource) -> dg.AssetCheckResult:
        df = read_table(salmon.warehouse, key)
        names = df.filter(df["entry_kind"] == "principle")["name"]
        dupes = names.filter(names.is_duplicated()).unique().to_list()
        return dg.AssetCheckResult(
            passed=names.len() > 0 and not dupes,
            metadata={"principles": names.len(), "duplicates": str(dupes)},
        )

    return _check
