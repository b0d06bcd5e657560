"""Model assets: ModelRef manifests, adapter vs full fine-tune, and what sft_model hands to training."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import polars as pl

from assets_defs.models import materialize_trained_model, read_model
from salmon_dag.lineage import Lineage
from salmon_dag.model_ref import ModelRef, write_model_ref
from salmon_dag.training.reporting import plot_curves
from salmon_dag.settings import Settings
from salmon_dag.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]
SFT_MODEL = dg.AssetKey("sft_model")
LINEAGE = Lineage(run_id="r1", config_hash="c1", code_version="v1", principle_hash="p1", model_id="base")


def _result(out: Path, is_adapter: bool):
    from salmon_dag.training import TrainResult

    return TrainResult(out_dir=out, steps=3, losses=[(1, 2.0), (3, 1.5)], log_history=[], resumed_from=None,
                       seconds=1.23, train_examples=5, is_adapter=is_adapter)


def test_adapter_and_full_fine_tune_manifests(tmp_path):
    wh = Warehouse(tmp_path / "warehouse")
    base = ModelRef(name="base_model", model_id="org/base", revision="v2", trust_remote_code=True)
    out = wh.model_dir("sft_model")

    res = materialize_trained_model(wh, SFT_MODEL, LINEAGE, base, _result(out, is_adapter=True))
    ref = read_model(wh, SFT_MODEL)
    assert (ref.model_id, ref.revision, ref.adapter_path, ref.trust_remote_code) == ("org/base", "v2", str(out), True)
    assert res.metadata["model_id"] == f"org/base + adapter {out}"
    assert res.metadata["train/steps"] == 3 and res.metadata["train/final_loss"] == 1.5
    assert res.metadata["lineage/run_id"] == "r1" and "loss_curve" in res.metadata

    res = materialize_trained_model(wh, SFT_MODEL, LINEAGE, base, _result(out, is_adapter=False),
                                    extra_metadata={"held_out_accuracy": 0.7})
    ref = read_model(wh, SFT_MODEL)
    # a full fine-tune is a model of its own: no base, no revision, no adapter
    assert (ref.model_id, ref.revision, ref.adapter_path) == (str(out), None, None)
    assert ref.info["is_adapter"] is False and res.metadata["held_out_accuracy"] == 0.7
    # no plot file: the curve is drawn from the losses; with one, that file is shown
    assert "loss_plot" not in res.metadata and "data:image/png;base64," in res.metadata["plot"].value
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(out / "loss.png", "sft", {"loss": {"train": [(1, 2.0), (3, 1.5)]}})
    res = materialize_trained_model(wh, SFT_MODEL, LINEAGE, base, _result(out, is_adapter=False))
    assert res.metadata["loss_plot"].value == str(out / "loss.png")
    assert "data:image/png;base64," in res.metadata["plot"].value


def test_sft_model_full_fine_tune_end_to_end(tiny_checkpoint, tmp_path, monkeypatch):
    """sft.lora unset: the asset trains the whole model, records it without an adapter, and
    passes the base model's revision and trust_remote_code to training."""
    import salmon_dag.training.sft as sft
    from assets_defs.resources import SalmonResource
    from assets_defs.self_align import build_self_align_assets

    shutil.copytree(ROOT / "principles", tmp_path / "principles")
    profile = tmp_path / "full.yaml"
    profile.write_text("extends: tiny\nengine: {device: cpu}\n"
                       "sft: {lora: null, max_steps: 1, per_device_batch_size: 2, max_seq_len: 96}\n")
    settings = Settings(str(profile), str(tmp_path / "warehouse"), str(tmp_path / "principles"))
    wh = Warehouse(settings.warehouse_dir)
    write_model_ref(wh, ModelRef(name="base_model", model_id=str(tiny_checkpoint), revision="v1",
                                 trust_remote_code=True))
    wh.write_table("self_align_sft_data", pl.DataFrame({
        "prompt": ["Say hi.", "Name a colour."], "response": ["Hi!", "Blue."],
        "filter_reason": pl.Series([None, None], dtype=pl.Utf8), "principle_hash": ["ph", "ph"],
    }))

    seen = {}
    real = sft.train_sft

    def spy(*args, revision=None, trust_remote_code=False, **kwargs):
        seen.update(revision=revision, trust_remote_code=trust_remote_code)
        return real(*args, **kwargs)  # the local micro checkpoint has neither revisions nor remote code

    monkeypatch.setattr(sft, "train_sft", spy)
    asset = next(a for a in build_self_align_assets(settings)
                 if isinstance(a, dg.AssetsDefinition) and a.key == SFT_MODEL)
    result = dg.materialize([asset], resources={"salmon": SalmonResource.from_settings(settings)})
    assert result.success
    assert seen == {"revision": "v1", "trust_remote_code": True}
    ref = read_model(wh, SFT_MODEL)
    assert ref.adapter_path is None and ref.revision is None
    assert ref.model_id == str(wh.model_dir("sft_model")) and (Path(ref.model_id) / "config.json").is_file()
    assert ref.lineage["principle_hash"] == "ph" and ref.info["steps"] == 1
