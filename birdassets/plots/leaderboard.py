"""A task's results across encoders: the leaderboard as bars, and score against training step per probe."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from birdassets.plots.render import COLOURS, new_figure

MAX_ROWS = 25
"""Leaderboard rows drawn (the best ones)."""


def leaderboard_figure(board: pd.DataFrame, title: str, chance: float | None = None) -> Figure:
    """Horizontal bars of ``mean`` +- ``std`` per ``label`` (best first, at most :data:`MAX_ROWS`), the row named
    ``highlight`` (a bool column, optional) darker; ``chance``: a dashed line at that score."""
    board = board.sort_values(["mean", "label"], ascending=[False, True], kind="stable").head(MAX_ROWS)
    figure, axes = new_figure(1.0 + 0.25 * len(board))
    positions = np.arange(len(board))[::-1]
    highlight = board["highlight"] if "highlight" in board else pd.Series(False, index=board.index)
    colours = [COLOURS[1] if h else COLOURS[0] for h in highlight]
    axes.barh(positions, board["mean"], xerr=board["std"].fillna(0.0), color=colours, height=0.7, capsize=2)
    axes.set_yticks(positions, board["label"], fontsize=8)
    if chance is not None:
        axes.axvline(chance, color="black", ls="--", lw=1, label=f"chance {chance:.3f}")
        axes.legend(fontsize=8, loc="lower right")
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("score (mean over folds, error bar: std)")
    figure.suptitle(title, fontsize=10)
    return figure


def score_vs_step_figure(curves: pd.DataFrame, title: str, marked_step: int | None = None) -> Figure:
    """One line per ``probe`` of ``mean`` against ``step`` (``curves`` columns ``probe, step, mean``);
    ``marked_step``: a vertical line at the checkpoint just scored."""
    figure, axes = new_figure(3.2)
    for k, (probe, rows) in enumerate(curves.sort_values("step").groupby("probe", sort=True)):
        axes.plot(rows["step"], rows["mean"], marker="o", ms=3, color=COLOURS[k % len(COLOURS)], label=probe)
    if marked_step is not None:
        axes.axvline(marked_step, color="grey", ls=":", lw=1)
    axes.set(xlabel="training step", ylabel="score", ylim=(0.0, 1.0))
    axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure
