"""The figures each asset attaches, assembled from what its step produced; every function returns
``{name: PNG bytes}`` (empty when there is nothing to draw)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from birdassets.artifacts import probe_classes, read_probe_predictions
from birdassets.detection.rule import DetectionResult
from birdassets.plots.timelines import detection_timeline_figure
from birdassets.plots.leaderboard import leaderboard_figure, score_vs_step_figure
from birdassets.plots.render import to_png
from birdassets.plots.scores import class_summary, hardest_and_easiest, per_class_ap_figure, pr_curves_figure
from birdassets.plots.curves import fold_curves_figure, run_history_figure
from birdassets.scoring import CHANCE_PROBE

HEADLINE = ("valid", "cmAP")
"""The split and metric the result figures rank by."""


def best_probe(scores: pd.DataFrame) -> str | None:
    """The probe of highest mean validation cmAP (the chance level excluded; ties by name)."""
    split, metric = HEADLINE
    rows = scores[(scores["split"] == split) & (scores["metric"] == metric) & (scores["probe"] != CHANCE_PROBE)]
    means = rows.groupby("probe")["value"].mean().dropna()
    return None if means.empty else min(means.index, key=lambda probe: (-means[probe], probe))


def evaluation_figures(probes_dir: Path, scores: pd.DataFrame, class_scores: pd.DataFrame, title: str
                       ) -> dict[str, bytes]:
    """``scores``: the best probe's per-class AP with support, and the PR curves of its 5 hardest and 5 easiest
    classes on the out-of-fold predictions."""
    probe = best_probe(scores)
    if probe is None:
        return {}
    summary = class_summary(class_scores, probe)
    saved = read_probe_predictions(probes_dir, probe)
    hardest, easiest = hardest_and_easiest(summary)
    return {
        "per_class_ap": to_png(per_class_ap_figure(summary, f"{title}: per-class AP of the {probe} probe")),
        "pr_curves": to_png(pr_curves_figure(saved.y_train, saved.valid_scores, probe_classes(probes_dir), hardest,
                                             easiest, f"{title}: out-of-fold precision-recall, {probe} probe")),
    }


def leaderboard_figures(board: pd.DataFrame, by_step: pd.DataFrame, task: str, checkpoint: str, run: str,
                        step: int | None) -> dict[str, bytes]:
    """``metrics_db``: the task's validation cmAP leaderboard (``board``: ``checkpoint, probe, mean, std``; this
    checkpoint's rows highlighted, chance dashed) and its run's score against step (``by_step``: ``probe, step,
    mean``)."""
    chance = board.loc[board["probe"] == CHANCE_PROBE, "mean"]
    bars = board[board["probe"] != CHANCE_PROBE].assign(
        label=lambda frame: frame["checkpoint"] + " · " + frame["probe"],
        highlight=lambda frame: frame["checkpoint"] == checkpoint)
    figures = {"leaderboard": to_png(leaderboard_figure(bars, f"{task}: validation cmAP",
                                                        float(chance.mean()) if len(chance) else None))}
    curves = by_step[by_step["probe"] != CHANCE_PROBE]
    if curves["step"].nunique() > 1:
        figures["score_vs_step"] = to_png(score_vs_step_figure(curves, f"{task}: validation cmAP of run {run}", step))
    return figures


def run_figures(history: list[dict], checkpoint: str, step: int | None) -> dict[str, bytes]:
    """``encoder``: the checkpoint's training run, loss and online-probe cmAP against step (``history.jsonl``)."""
    if not history:
        return {}
    frame = pd.DataFrame(history)
    return {"training": to_png(run_history_figure(frame, f"training run of {checkpoint}", step))}


def supervised_figures(history: pd.DataFrame, title: str) -> dict[str, bytes]:
    """``supervised_model``: each fold's training loss and validation AUC against epoch."""
    return {} if history.empty else {"learning_curves": to_png(fold_curves_figure(history, title))}


def detection_figures(result: DetectionResult) -> dict[str, bytes]:
    """``detections``: confidence over time of the most confident recordings."""
    if not result.recordings:
        return {}
    return {"timeline": to_png(detection_timeline_figure(result, f"{result.scorer}: confidence over time"))}
