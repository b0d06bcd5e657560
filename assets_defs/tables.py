"""Table assets by key: writing (lineage columns, atomic Parquet, DuckDB refresh, Dagster metadata)
and reading."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl

from salmon_dag.lineage import Lineage
from salmon_dag.warehouse import Warehouse

PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 60


def table_name(key: dg.AssetKey) -> str:
    """The warehouse table (and model manifest) name of an asset key: its path joined by '/'."""
    return "/".join(key.path)


def read_table(warehouse: Warehouse, key: dg.AssetKey) -> pl.DataFrame:
    """The table that the asset ``key`` wrote (see :func:`materialize_table`)."""
    return warehouse.read_table(table_name(key))


def preview_markdown(df: pl.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    def cell(v: object) -> str:
        s = "" if v is None else str(v).replace("\n", " ").replace("|", "\\|")
        return s if len(s) <= PREVIEW_CELL_CHARS else s[: PREVIEW_CELL_CHARS - 1] + "…"

    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.head(rows).iter_rows()]
    return "\n".join([head, sep, *body])


def table_metadata(df: pl.DataFrame, path: str) -> dict[str, object]:
    schema = dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in df.schema.items()])
    return {
        "dagster/row_count": df.height,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(preview_markdown(df)),
        "path": dg.MetadataValue.path(path),
    }


def materialize_table(
    warehouse: Warehouse,
    key: dg.AssetKey,
    df: pl.DataFrame,
    lineage: Lineage,
    data_version: str | None = None,
    extra_metadata: dict[str, object] | None = None,
) -> dg.MaterializeResult:
    """Write ``df`` (with lineage columns) as the table of ``key`` and describe it to Dagster."""
    df = lineage.apply(df)
    path = warehouse.write_table(table_name(key), df, lineage=lineage.as_dict())
    metadata = {**table_metadata(df, str(path)), **lineage_metadata(lineage), **(extra_metadata or {})}
    return dg.MaterializeResult(
        asset_key=key,
        metadata=metadata,
        data_version=dg.DataVersion(data_version) if data_version else None,
    )


def lineage_metadata(lineage: Lineage) -> dict[str, object]:
    meta: dict[str, object] = {f"lineage/{k}": v for k, v in lineage.as_dict().items()
                               if v is not None and k not in ("rehearsal", "data_files")}
    if lineage.rehearsal is not None:
        meta.update(rehearsal_metadata(lineage.rehearsal))
    if lineage.data_files is not None:
        # which local data files it was built from; a missing optional one is said, not hidden
        meta["lineage/data_files"] = dg.MetadataValue.md("| file | sha256 |\n|---|---|\n" + "\n".join(
            f"| `{name}` | {digest[:16] if digest else 'missing: what needs it was skipped'} |"
            for name, digest in sorted(lineage.data_files["files"].items())))
    return meta


def rehearsal_metadata(record: dict) -> dict[str, object]:
    """A rehearsal's asset metadata: which real profile, the settings it shrank or replaced (real
    value, rehearsal value, why) and the real settings it ran with."""
    def cell(value: object) -> str:
        text = json.dumps(value, ensure_ascii=False, default=str)
        return (text if len(text) <= 90 else text[:87] + "...").replace("|", "\\|")

    changed = "\n".join(f"| `{c['path']}` | {cell(c['real'])} | {cell(c['rehearsal'])} | {c['why']} |"
                        for c in record["changed"])
    kept = "\n".join(f"- `{path}` = {cell(value)}" for path, value in record["kept"])
    return {
        "rehearsal/of": record["of"],
        "rehearsal/changed": dg.MetadataValue.md(f"| setting | real | rehearsal | why |\n|---|---|---|---|\n{changed}"),
        "rehearsal/kept": dg.MetadataValue.md(kept or "(none)"),
    }


def loss_curve_markdown(points: list[tuple[int, float]], max_rows: int = 20, label: str = "loss") -> dg.MetadataValue:
    """A (step, ``label``) table for asset metadata, thinned to about ``max_rows`` rows."""
    stride = max(1, len(points) // max_rows)
    rows = points[::stride]
    if points and rows[-1] != points[-1]:
        rows.append(points[-1])
    return dg.MetadataValue.md(f"| step | {label} |\n|---|---|\n" + "\n".join(f"| {s} | {v:.4f} |" for s, v in rows))
