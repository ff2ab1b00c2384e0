"""Sliding-window detection over long recordings, with OrcaHello's decision rule.

For each recording: stage-A windows of ``clip_s`` every ``hop_s`` (OrcaHello: 2 s clips, 1 s hop, whole clips
only); a per-window confidence in [0, 1] from a :class:`~birdassets.detection.scorers.WindowScorer`; then per
recording (:func:`decide`)

* ``local_predictions[k] = confidence[k] > threshold`` (strict, as OrcaHello),
* ``global_prediction = 1`` when at least ``min_num_positive_calls`` windows are positive (not necessarily
  consecutive),
* ``global_confidence`` = mean of the confidences above the threshold, 0 when there are none (0-1 scale).

Differences from the legacy OrcaHello live system, on purpose: confidences are the raw per-window ones (its
model_v1 port does the same), not the legacy rolling mean of two windows resampled to one row per second, and
``global_confidence`` is on a 0-1 scale (legacy: 0-100).

Windows of all recordings are scored in large batches; one unreadable recording (or one whose windows the
scorer gives a NaN/inf confidence) is reported in ``DetectionResult.failed`` and never stops the others;
no non-finite confidence reaches a result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.audio.io import AudioError, load, require_finite
from birdassets.detection.outputs import WINDOW_COLUMNS, write_detections
from birdassets.detection.scorers import WindowScorer
from birdassets.frontends.windowing import WindowSpec, cut_windows, window_starts

SCORE_BATCH_WINDOWS = 256
"""Windows scored per call of ``WindowScorer.score`` (across recordings)."""


@dataclass(frozen=True)
class DetectionConfig:
    """Windowing and decision rule.

    Attributes:
        clip_s: window length, seconds (OrcaHello: 2).
        hop_s: hop between window starts, seconds (OrcaHello: 1).
        threshold: a window is positive when its confidence is strictly above this (OrcaHello: 0.5).
        min_num_positive_calls: positives needed for ``global_prediction = 1`` (OrcaHello: 3).
        min_last_s: the last partial window is kept (zero-padded) when at least this long, seconds;
            ``None`` = ``clip_s`` (whole windows only, as OrcaHello's proposals).
    """

    clip_s: float = 2.0
    hop_s: float = 1.0
    threshold: float = 0.5
    min_num_positive_calls: int = 3
    min_last_s: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not (self.clip_s > 0 and self.hop_s > 0):
            problems.append("clip_s and hop_s must be > 0")
        if not 0.0 <= self.threshold < 1.0:
            problems.append(f"threshold must be within [0, 1), got {self.threshold}")
        if self.min_num_positive_calls < 1:
            problems.append("min_num_positive_calls must be >= 1")
        if self.min_last_s is not None and not 0 <= self.min_last_s <= self.clip_s:
            problems.append("min_last_s must be within [0, clip_s]")
        if problems:
            raise ValueError("invalid detection config: " + "; ".join(problems))

    def windows(self, sample_rate: int) -> WindowSpec:
        """Stage A at ``sample_rate`` Hz."""
        last = self.clip_s if self.min_last_s is None else self.min_last_s
        return WindowSpec(sample_rate=sample_rate, clip_s=self.clip_s, hop_s=self.hop_s, min_last_s=last)


@dataclass(frozen=True)
class RecordingDetections:
    """One recording's OrcaHello-shaped result.

    Attributes:
        file: the recording.
        duration_s: its length, seconds.
        start_s, confidence: ``[windows]`` window starts (s) and confidences.
        clip_s: window length (s).
        global_prediction: 0/1.
        global_confidence: mean confidence of the positive windows (0 when none).
    """

    file: str
    duration_s: float
    start_s: np.ndarray
    confidence: np.ndarray
    clip_s: float
    threshold: float
    global_prediction: int
    global_confidence: float

    @property
    def local_predictions(self) -> np.ndarray:
        return (self.confidence > self.threshold).astype(np.int64)

    def to_dict(self) -> dict:
        positive = self.local_predictions
        return {
            "file": self.file,
            "duration_s": self.duration_s,
            "local_predictions": positive.tolist(),
            "local_confidences": [float(c) for c in self.confidence],
            "segments": [
                {"start_time_s": float(s), "duration_s": self.clip_s, "confidence": float(c), "positive": int(p)}
                for s, c, p in zip(self.start_s, self.confidence, positive, strict=True)
            ],
            "global_prediction": self.global_prediction,
            "global_confidence": self.global_confidence,
        }


def decide(confidence: np.ndarray, threshold: float, min_num_positive_calls: int) -> tuple[int, float]:
    """OrcaHello's global decision for one recording's ``[windows]`` confidences."""
    positive = np.asarray(confidence) > threshold
    global_prediction = int(positive.sum() >= min_num_positive_calls)
    global_confidence = float(np.mean(confidence[positive])) if positive.any() else 0.0
    return global_prediction, global_confidence


@dataclass(frozen=True)
class DetectionResult:
    """Detections over many recordings, plus the ones that could not be read.

    Attributes:
        scorer: the scorer's name.
        config: the windowing and decision rule.
        recordings: one :class:`RecordingDetections` per readable recording, in input order.
        failed: ``(path, reason)`` for recordings that could not be decoded.
    """

    scorer: str
    config: DetectionConfig
    recordings: tuple[RecordingDetections, ...]
    failed: tuple[tuple[str, str], ...] = ()

    def windows_frame(self) -> pd.DataFrame:
        """One row per window, columns :data:`~birdassets.detection.outputs.WINDOW_COLUMNS`: ``file, start_s,
        duration_s, confidence, local_prediction, global_prediction, global_confidence``."""
        frames = [
            pd.DataFrame({
                "file": r.file, "start_s": r.start_s, "duration_s": r.clip_s, "confidence": r.confidence,
                "local_prediction": r.local_predictions, "global_prediction": r.global_prediction,
                "global_confidence": r.global_confidence,
            })
            for r in self.recordings
        ]
        return pd.concat(frames, ignore_index=True)[WINDOW_COLUMNS] if frames else pd.DataFrame(columns=WINDOW_COLUMNS)

    def to_dict(self) -> dict:
        """The JSON document: ``scorer, config, recordings`` (:meth:`RecordingDetections.to_dict`), ``failed``."""
        return {
            "scorer": self.scorer,
            "config": asdict(self.config),
            "recordings": [r.to_dict() for r in self.recordings],
            "failed": [{"file": path, "reason": reason} for path, reason in self.failed],
        }

    def write(self, path: str | Path, kind: str | None = None, *, label: str | None = None,
              merge: bool = False) -> Path:
        """Write JSON, one-row-per-window CSV, a Raven selection table or Audacity label tracks atomically
        (:func:`write_detections`; ``kind`` defaults to the suffix's)."""
        return write_detections(self, path, kind, label=label, merge=merge)


def detect_recordings(paths: Sequence[str | Path], scorer: WindowScorer, config: DetectionConfig) -> DetectionResult:
    """Score the sliding windows of every recording and apply the decision rule.

    Each recording is decoded once at ``scorer.sample_rate``; windows from all recordings are scored
    together in batches of :data:`SCORE_BATCH_WINDOWS`. Undecodable recordings, and recordings with a
    non-finite confidence, go to ``failed`` as ``(path, message naming the path)``.
    """
    spec = config.windows(scorer.sample_rate)
    readable, failed = [], []
    for path in paths:
        try:
            readable.append(read_windows(path, spec))
        except AudioError as error:
            failed.append((str(path), str(error)))
    clips = np.concatenate([w.clips for w in readable]) if readable else np.zeros((0, spec.clip_samples), np.float32)
    confidence = score_windows(clips, scorer)  # [all windows]
    per_recording = np.split(confidence, np.cumsum([len(w.start_s) for w in readable])[:-1]) if readable else []
    recordings = []
    for recording, conf in zip(readable, per_recording, strict=True):
        try:
            require_finite(recording.file, "the scorer's window confidences", conf)
        except AudioError as error:
            failed.append((recording.file, str(error)))
            continue
        prediction, global_confidence = decide(conf, config.threshold, config.min_num_positive_calls)
        recordings.append(
            RecordingDetections(
                file=recording.file, duration_s=recording.duration_s, start_s=recording.start_s, confidence=conf,
                clip_s=config.clip_s, threshold=config.threshold, global_prediction=prediction,
                global_confidence=global_confidence,
            )
        )
    return DetectionResult(scorer.name, config, tuple(recordings), tuple(failed))


@dataclass(frozen=True)
class RecordingWindows:
    """One decoded recording cut into windows: ``clips [windows, clip_samples]`` float32, ``start_s [windows]``."""

    file: str
    duration_s: float
    start_s: np.ndarray
    clips: np.ndarray


def read_windows(path: str | Path, spec: WindowSpec) -> RecordingWindows:
    """Decode ``path`` at ``spec.sample_rate`` Hz and cut its windows.

    A recording shorter than the shortest window kept has no windows (as OrcaHello).

    Raises:
        AudioError: the file cannot be decoded.
    """
    audio, _ = load(path, spec.sample_rate)
    duration = len(audio) / spec.sample_rate
    start = np.asarray(window_starts(duration, spec), dtype=np.float64)
    if duration < min(spec.clip_s, spec.min_last_s):
        start = start[:0]
    return RecordingWindows(str(path), duration, start, cut_windows(audio, start, spec))


def score_windows(clips: np.ndarray, scorer: WindowScorer) -> np.ndarray:
    """``[windows, clip_samples]`` -> ``[windows]`` float64 confidences, :data:`SCORE_BATCH_WINDOWS` at a time."""
    confidence = np.zeros(len(clips))
    for first in range(0, len(clips), SCORE_BATCH_WINDOWS):
        batch = clips[first : first + SCORE_BATCH_WINDOWS]
        confidence[first : first + len(batch)] = np.asarray(scorer.score(batch), dtype=np.float64)
    return confidence


def result_from_tables(windows: pd.DataFrame, files: pd.DataFrame) -> DetectionResult:
    """One scorer's detections rebuilt from its DuckDB rows (notebooks, reports).

    Args:
        windows: ``detections`` rows: ``scorer, path, start_s, duration_s, confidence``.
        files: ``detection_files`` rows: ``scorer, path, duration_s, global_prediction, global_confidence,
            config`` (the rule as JSON).
    """
    config = DetectionConfig(**json.loads(files["config"].iloc[0]))
    recordings = []
    for file in files.sort_values("path").itertuples(index=False):
        rows = windows[windows["path"] == file.path].sort_values("start_s")
        recordings.append(RecordingDetections(
            file=file.path, duration_s=float(file.duration_s), start_s=rows["start_s"].to_numpy(float),
            confidence=rows["confidence"].to_numpy(float), clip_s=config.clip_s, threshold=config.threshold,
            global_prediction=int(file.global_prediction), global_confidence=float(file.global_confidence)))
    return DetectionResult(str(files["scorer"].iloc[0]), config, tuple(recordings))
