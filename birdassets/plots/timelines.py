"""Detection timelines: window confidence over time per recording, with the threshold and the global decision."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from birdassets.detection.rule import DetectionResult
from birdassets.plots.render import COLOURS, new_figure

MAX_RECORDINGS = 6
"""Recordings drawn: the most confident detections first, then the most confident of the rest."""


def timeline_order(result: DetectionResult) -> list[int]:
    """Indices of the recordings to draw: detected ones first, each group by global confidence (then the highest
    window), at most :data:`MAX_RECORDINGS`."""
    keys = [(-r.global_prediction, -r.global_confidence, -float(np.max(r.confidence, initial=0.0)), r.file)
            for r in result.recordings]
    return sorted(range(len(keys)), key=keys.__getitem__)[:MAX_RECORDINGS]


def detection_timeline_figure(result: DetectionResult, title: str) -> Figure:
    """One panel per recording (:func:`timeline_order`): each window's confidence at its centre (s), positive
    windows shaded, the threshold dashed, the global decision in the panel title."""
    shown = timeline_order(result)
    figure, axes = new_figure(0.6 + 1.3 * max(len(shown), 1), rows=max(len(shown), 1))
    axes = np.atleast_1d(axes)
    for ax, index in zip(axes, shown, strict=False):
        recording = result.recordings[index]
        centres = recording.start_s + recording.clip_s / 2
        ax.plot(centres, recording.confidence, color=COLOURS[0], lw=1.2, marker=".", ms=3)
        for start in recording.start_s[recording.local_predictions == 1]:
            ax.axvspan(start, start + recording.clip_s, color=COLOURS[1], alpha=0.15, lw=0)
        ax.axhline(recording.threshold, color="black", ls="--", lw=0.8)
        decision = "DETECTED" if recording.global_prediction else "not detected"
        name = recording.file.rsplit("/", 1)[-1]
        ax.set_title(f"{name}: {decision} ({int(recording.local_predictions.sum())} positive windows)", fontsize=8)
        ax.set(ylim=(0.0, 1.0), xlim=(0.0, max(recording.duration_s, 1e-3)), ylabel="confidence")
    axes[-1].set_xlabel("time in recording (s)")
    figure.suptitle(title, fontsize=10)
    return figure
