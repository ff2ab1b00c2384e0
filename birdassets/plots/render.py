"""Figures to PNG bytes: small, and the same bytes for the same data (no timestamps, no version strings)."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from birdassets.atomic import write_bytes

MAX_PNG_BYTES = 200_000
"""Largest PNG a plot may be (they are stored in Dagster's event log and embedded in pages)."""
DPI = 90
WIDTH_IN = 8.0
"""Figure width, inches (720 px at :data:`DPI`)."""
COLOURS = ("#1b6ca8", "#e07b39", "#3a9d5d", "#b04a82", "#7f6bb0", "#8c6d31", "#5a5a5a", "#c03b3b")
"""Line and bar colours, in order (colour-blind friendly first four)."""


def new_figure(height_in: float, width_in: float = WIDTH_IN, rows: int = 1, cols: int = 1):
    """A figure of ``width_in x height_in`` inches and its axes (an array when ``rows * cols > 1``)."""
    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=True)
    return figure, axes


def to_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (deterministic: no metadata that changes between runs).

    Raises:
        ValueError: the PNG exceeds :data:`MAX_PNG_BYTES`.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    png = buffer.getvalue()
    if len(png) > MAX_PNG_BYTES:
        raise ValueError(f"plot {figure.get_suptitle()!r} is {len(png)} bytes, over the {MAX_PNG_BYTES} limit")
    return png


def save_pngs(directory: Path, figures: dict[str, bytes]) -> dict[str, Path]:
    """Write ``<name>.png`` per figure into ``directory`` atomically; returns the paths by name."""
    return {name: write_bytes(Path(directory) / f"{name}.png", png) for name, png in figures.items()}
