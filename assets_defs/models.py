"""Writing a model asset: the ModelRef manifest plus Dagster metadata (``materialize_table``'s
counterpart for checkpoints)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets_defs.tables import lineage_metadata, loss_curve_markdown, table_name
from salmon_dag.images import curve_markdown, plot_markdown
from salmon_dag.lineage import Lineage
from salmon_dag.model_ref import ModelRef, read_model_ref, write_model_ref
from salmon_dag.warehouse import Warehouse

if TYPE_CHECKING:
    from salmon_dag.training import TrainResult


def read_model(warehouse: Warehouse, key: dg.AssetKey) -> ModelRef:
    """The ModelRef that the model asset ``key`` wrote."""
    return read_model_ref(warehouse, table_name(key))


def materialize_model(
    warehouse: Warehouse,
    key: dg.AssetKey,
    lineage: Lineage,
    model_id: str,
    *,
    revision: str | None = None,
    adapter_path: str | None = None,
    trust_remote_code: bool = False,
    info: Mapping[str, Any] | None = None,
    info_prefix: str = "train",
    losses: Sequence[tuple[int, float]] = (),
    loss_plot: Path | None = None,
    extra_metadata: Mapping[str, object] | None = None,
) -> dg.MaterializeResult:
    """Write the ModelRef manifest of ``key`` and describe the model to Dagster: model id, path,
    ``{info_prefix}/*`` scalars from ``info``, the loss curve and plot when given, lineage."""
    ref = ModelRef(
        name=table_name(key), model_id=model_id, revision=revision, adapter_path=adapter_path,
        trust_remote_code=trust_remote_code, lineage=lineage.as_dict(), info=dict(info or {}),
    )
    manifest = write_model_ref(warehouse, ref)
    shown = f"{model_id} + adapter {adapter_path}" if adapter_path else model_id
    metadata: dict[str, object] = {"model_id": shown, "manifest": dg.MetadataValue.path(str(manifest))}
    local = adapter_path or (model_id if Path(model_id).is_dir() else None)
    if local:
        metadata["path"] = dg.MetadataValue.path(str(local))
    name = table_name(key)
    if loss_plot is not None and Path(loss_plot).is_file():
        metadata["loss_plot"] = dg.MetadataValue.path(str(loss_plot))
        metadata["plot"] = dg.MetadataValue.md(plot_markdown(loss_plot, f"{name} training curves"))
    elif losses:
        metadata["plot"] = dg.MetadataValue.md(curve_markdown(list(losses), f"{name} training loss"))
    if losses:
        metadata["loss_curve"] = loss_curve_markdown(list(losses))
    metadata.update({f"{info_prefix}/{k}": v for k, v in ref.info.items() if isinstance(v, (int, float, str))})
    return dg.MaterializeResult(
        asset_key=key, metadata={**metadata, **lineage_metadata(lineage), **(extra_metadata or {})}
    )


def materialize_trained_model(
    warehouse: Warehouse,
    key: dg.AssetKey,
    lineage: Lineage,
    base: ModelRef,
    result: "TrainResult",
    *,
    extra_info: Mapping[str, Any] | None = None,
    extra_metadata: Mapping[str, object] | None = None,
) -> dg.MaterializeResult:
    """:func:`materialize_model` for a training result on top of ``base``: an adapter is recorded
    as ``base`` + adapter, a full fine-tune as the saved model alone."""
    from salmon_dag.training.reporting import LOSS_PLOT

    info = {
        "steps": result.steps, "train_examples": result.train_examples, "seconds": round(result.seconds, 1),
        "final_loss": result.losses[-1][1] if result.losses else None, "resumed_from": result.resumed_from or "",
        "is_adapter": result.is_adapter, **(extra_info or {}),
    }
    if result.is_adapter:
        where = dict(model_id=base.model_id, revision=base.revision, adapter_path=str(result.out_dir))
    else:
        where = dict(model_id=str(result.out_dir))
    return materialize_model(
        warehouse, key, lineage, **where, trust_remote_code=base.trust_remote_code, info=info,
        losses=result.losses, loss_plot=Path(result.out_dir) / LOSS_PLOT, extra_metadata=extra_metadata,
    )
