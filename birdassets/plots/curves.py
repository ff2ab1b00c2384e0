"""Training curves: an encoder run's loss and online-probe cmAP, a supervised model's folds."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from birdassets.plots.render import COLOURS, new_figure


def run_history_figure(history: pd.DataFrame, title: str, marked_step: int | None = None) -> Figure:
    """Loss (left) and online-probe cmAP (right) against step; ``history`` columns ``step``, ``loss`` and
    optionally ``probe_cmap`` (NaN where not evaluated); ``marked_step``: a vertical line there."""
    figure, (loss_ax, probe_ax) = new_figure(3.0, cols=2)
    loss = history.dropna(subset=["loss"]) if "loss" in history else history.iloc[:0]
    loss_ax.plot(loss["step"], loss["loss"], color=COLOURS[0], lw=1.2)
    loss_ax.set(xlabel="step", ylabel="training loss")
    if "probe_cmap" in history:
        probe = history.dropna(subset=["probe_cmap"])
        probe_ax.plot(probe["step"], probe["probe_cmap"], color=COLOURS[1], marker="o", ms=3)
    probe_ax.set(xlabel="step", ylabel="online probe cmAP", ylim=(0.0, 1.0))
    for ax in (loss_ax, probe_ax):
        if marked_step is not None:
            ax.axvline(marked_step, color="grey", ls=":", lw=1)
    figure.suptitle(title, fontsize=10)
    return figure


def fold_curves_figure(history: pd.DataFrame, title: str) -> Figure:
    """Per fold: training loss (left) and validation class-wise AUC (right) against epoch; ``history`` columns
    ``fold``, ``epoch``, ``train_loss``, ``val_auc``."""
    figure, (loss_ax, auc_ax) = new_figure(3.0, cols=2)
    for k, (fold, rows) in enumerate(history.sort_values("epoch").groupby("fold", sort=True)):
        colour = COLOURS[k % len(COLOURS)]
        loss_ax.plot(rows["epoch"], rows["train_loss"], color=colour, lw=1.2, label=f"fold {fold}")
        auc_ax.plot(rows["epoch"], rows["val_auc"], color=colour, lw=1.2, marker="o", ms=3)
    loss_ax.set(xlabel="epoch", ylabel="training loss")
    auc_ax.set(xlabel="epoch", ylabel="validation class-wise AUC", ylim=(0.0, 1.0))
    loss_ax.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    return figure
