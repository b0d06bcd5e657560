"""Plots as Markdown: Dagster has no image metadata type, but its UI renders a Markdown image
whose source is a base64 ``data:`` URL. Kept small (a downscaled PNG) so the event log stays lean."""

from __future__ import annotations

import base64
import io
from pathlib import Path

# Wide enough to read in the asset page's metadata panel, small enough to store in every event.
THUMBNAIL_PX = 640


def png_markdown(png: bytes, alt: str) -> str:
    """``![alt](data:image/png;base64,...)``."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def thumbnail(png: Path | str | bytes, max_px: int = THUMBNAIL_PX) -> bytes:
    """The PNG (a file, or its bytes) scaled down to fit ``max_px`` x ``max_px`` (never up)."""
    from PIL import Image

    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as img:
        img = img.convert("RGB")
        img.thumbnail((max_px, max_px))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def plot_markdown(path: Path | str, alt: str) -> str:
    """A Markdown image of the PNG at ``path`` (downscaled), or a note when there is none."""
    if not Path(path).is_file():
        return f"no plot ({path} missing)"
    return png_markdown(thumbnail(path), alt)


def curve_markdown(points: list[tuple[int, float]], title: str, label: str = "loss") -> str:
    """A Markdown image of one (step, value) curve, drawn in memory."""
    from salmon_dag.training.reporting import plot_curves

    buf = io.BytesIO()
    plot_curves(buf, title, {label: {"train": points}})
    return png_markdown(thumbnail(buf.getvalue()), title)
