"""Per-class results of one evaluation: AP bars with each class's support, and precision-recall curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from birdassets.plots.render import COLOURS, new_figure

MAX_BARS = 40
"""Classes drawn in the AP bar chart; beyond it, the :data:`MAX_BARS` / 2 hardest and easiest."""
PR_CLASSES = 5
"""Classes in each precision-recall panel (the hardest and the easiest by AP)."""


def class_summary(class_scores: pd.DataFrame, probe: str, split: str = "valid") -> pd.DataFrame:
    """One row per class scored for ``probe`` on ``split``: ``class_name``, ``ap`` (mean over the folds that
    score it), ``support`` (positive windows summed over folds), sorted by AP then name (NaN AP last)."""
    rows = class_scores[(class_scores["probe"] == probe) & (class_scores["split"] == split)]
    summary = rows.groupby("class_name", sort=True).agg(ap=("ap", "mean"), support=("support", "sum")).reset_index()
    return summary.sort_values(["ap", "class_name"], kind="stable", na_position="last").reset_index(drop=True)


def hardest_and_easiest(summary: pd.DataFrame, k: int = PR_CLASSES) -> tuple[list[str], list[str]]:
    """The ``k`` classes of lowest AP and the ``k`` of highest (ties by name; unscored classes left out); with
    fewer than ``2k`` scored classes the two lists split them."""
    scored = summary.dropna(subset=["ap"]).sort_values(["ap", "class_name"], kind="stable")["class_name"].tolist()
    k = min(k, len(scored) // 2 + len(scored) % 2)
    return scored[:k], scored[::-1][: min(k, len(scored) - k)]


def per_class_ap_figure(summary: pd.DataFrame, title: str) -> Figure:
    """Horizontal bars of each class's AP (``summary`` of :func:`class_summary`), labelled ``name (n=support)``;
    over :data:`MAX_BARS` classes, the hardest and easiest halves."""
    shown = summary if len(summary) <= MAX_BARS else pd.concat([summary.head(MAX_BARS // 2), summary.dropna(
        subset=["ap"]).tail(MAX_BARS // 2)]).drop_duplicates("class_name")
    figure, axes = new_figure(1.0 + 0.22 * len(shown))
    positions = np.arange(len(shown))[::-1]
    axes.barh(positions, shown["ap"].fillna(0.0), color=COLOURS[0], height=0.7)
    axes.set_yticks(positions, [f"{n} (n={int(s)})" for n, s in zip(shown["class_name"], shown["support"])], fontsize=8)
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("average precision (mean over folds)")
    more = f", {len(shown)} of {len(summary)} classes" if len(shown) < len(summary) else ""
    figure.suptitle(f"{title}{more}", fontsize=10)
    return figure


def pr_curves_figure(y_true: np.ndarray, y_score: np.ndarray, classes: tuple[str, ...], hardest: list[str],
                     easiest: list[str], title: str) -> Figure:
    """Precision-recall curves of the ``hardest`` and ``easiest`` classes, side by side.

    Args:
        y_true: ``[windows, classes]`` 0/1 truth.
        y_score: ``[windows, classes]`` scores (out-of-fold probabilities).
        classes: names of the columns.
    """
    figure, axes = new_figure(3.6, cols=2)
    index = {name: c for c, name in enumerate(classes)}
    for ax, names, label in zip(axes, (hardest, easiest), ("hardest", "easiest"), strict=True):
        for k, name in enumerate(names):
            truth, score = y_true[:, index[name]], y_score[:, index[name]]
            precision, recall, _ = precision_recall_curve(truth, score)
            ax.plot(recall, precision, color=COLOURS[k % len(COLOURS)], drawstyle="steps-post", lw=1.4,
                    label=f"{name} (n={int(truth.sum())})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"{len(names)} {label} classes")
        if names:
            ax.legend(fontsize=7, loc="lower left")
    figure.suptitle(title, fontsize=10)
    return figure
