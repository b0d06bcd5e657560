"""Plots people can see in the Dagster UI: small base64 PNGs in Markdown metadata."""

import base64
import io
import re

import pytest
from PIL import Image
from projects import instance_of

from salmon_dag.images import THUMBNAIL_PX, curve_markdown, plot_markdown, png_markdown
from salmon_dag.training.reporting import plot_curves

IMAGE = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def images(markdown: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(m))) for m in IMAGE.findall(markdown)]


def test_a_saved_plot_becomes_a_small_markdown_image(tmp_path):
    path = tmp_path / "loss.png"
    plot_curves(path, "loss", {"loss": {"train": [(i, 1 / (i + 1)) for i in range(50)]},
                               "accuracy": {"train": [(i, i / 50) for i in range(50)]}})
    big = Image.open(path)
    assert max(big.size) > THUMBNAIL_PX  # the file on disk keeps its full size
    (img,) = images(plot_markdown(path, "sft_model training curves"))
    assert img.format == "PNG" and max(img.size) == THUMBNAIL_PX
    assert img.size[0] / img.size[1] == pytest.approx(big.size[0] / big.size[1], rel=0.02)
    assert plot_markdown(tmp_path / "none.png", "x").startswith("no plot")
    assert png_markdown(b"\x89PNG", "a b").startswith("![a b](data:image/png;base64,iVBOR")


def test_a_curve_is_drawn_in_memory():
    md = curve_markdown([(1, 8.0), (2, 6.0), (3, 5.0)], "base_model training loss")
    (img,) = images(md)
    assert img.size[0] <= THUMBNAIL_PX and len(md) < 60_000


@pytest.mark.slow
def test_every_trained_model_and_the_benchmarks_show_a_plot(project):
    import dagster as dg

    with instance_of(project) as instance:
        for key, field in [("base_model", "plot"), ("sft_model", "plot"), ("reward_model", "plot"),
                           ("ppo_policy", "plot"), ("benchmark_scores", "plot/win_rate")]:
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            meta = event.asset_materialization.metadata
            assert field in meta, (key, sorted(meta))
            (img,) = images(meta[field].value)
            assert img.size[0] > 100 and len(meta[field].value) < 100_000, key
