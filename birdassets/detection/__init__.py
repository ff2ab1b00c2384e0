"""Sliding-window detection over long recordings (OrcaHello's decision rule).

* :mod:`~birdassets.detection.scorers`: clips -> one confidence each (BirdNET logits, a trained probe, band energy);
* :mod:`~birdassets.detection.rule`: windows -> scores -> per-recording decision (:func:`detect_recordings`);
* :mod:`~birdassets.detection.outputs`: JSON, CSV, Raven selection tables and Audacity label tracks;
* :mod:`~birdassets.detection.orcahello`: :class:`OrcaHello`, the inference class over a call classifier.
"""

from birdassets.detection.outputs import WINDOW_COLUMNS, write_detections
from birdassets.detection.rule import (
    SCORE_BATCH_WINDOWS,
    DetectionConfig,
    DetectionResult,
    RecordingDetections,
    RecordingWindows,
    decide,
    detect_recordings,
    read_windows,
    score_windows,
)
from birdassets.detection.orcahello import OrcaHello
from birdassets.detection.scorers import (
    BandEnergyScorer,
    BirdNetScorer,
    ClassifierScorer,
    ProbeScorer,
    WindowScorer,
    fit_clips,
    make_scorer,
    resolve_labels,
    sigmoid,
)

__all__ = [
    "SCORE_BATCH_WINDOWS",
    "WINDOW_COLUMNS",
    "BandEnergyScorer",
    "BirdNetScorer",
    "ClassifierScorer",
    "DetectionConfig",
    "DetectionResult",
    "OrcaHello",
    "ProbeScorer",
    "RecordingDetections",
    "RecordingWindows",
    "WindowScorer",
    "decide",
    "detect_recordings",
    "fit_clips",
    "make_scorer",
    "read_windows",
    "resolve_labels",
    "score_windows",
    "sigmoid",
    "write_detections",
]
