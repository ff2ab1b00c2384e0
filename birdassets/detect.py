"""Sliding-window detection over long recordings, with OrcaHello's decision rule.

For each recording: stage-A windows of ``clip_s`` every ``hop_s`` (OrcaHello: 2 s clips, 1 s hop, whole clips
only); a per-window confidence in [0, 1] from a :class:`WindowScorer` (:class:`BirdNetScorer`: BirdNET's
logits for chosen target classes; :class:`ProbeScorer`: a probe trained in the benchmark, on any encoder;
:class:`BandEnergyScorer`: a model-free energy detector); then per recording

* ``local_predictions[k] = confidence[k] > threshold`` (strict, as OrcaHello),
* ``global_prediction = 1`` when at least ``min_num_positive_calls`` windows are positive (not necessarily
  consecutive),
* ``global_confidence`` = mean of the confidences above the threshold, 0 when there are none (0-1 scale).

Differences from the legacy OrcaHello live system, on purpose: confidences are the raw per-window ones (its
model_v1 port does the same), not the legacy rolling mean of two windows resampled to one row per second, and
``global_confidence`` is on a 0-1 scale (legacy: 0-100).

Windows of all recordings are scored in large batches; one unreadable recording is reported in
``DetectionResult.failed`` and never stops the others.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from birdassets.audio.io import AudioError, load
from birdassets.frontends.windowing import WindowSpec, cut_windows, window_starts

SCORE_BATCH_WINDOWS = 256


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


class WindowScorer(Protocol):
    """Maps clips to one confidence each.

    Attributes:
        name: stored with the detections (e.g. ``"birdnet-v2.4:Orcinus orca_Killer Whale"``).
        sample_rate: Hz the clips are resampled to.
    """

    name: str
    sample_rate: int

    def score(self, clips: np.ndarray) -> np.ndarray:
        """``[windows, clip_samples]`` float32 -> ``[windows]`` confidences in [0, 1]."""
        ...


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function, numerically safe for large ``|logits|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


def fit_clips(clips: np.ndarray, samples: int) -> np.ndarray:
    """Zero-pad (or split) ``[n, clip_samples]`` clips into encoder windows ``[n, k, samples]``.

    A clip no longer than ``samples`` becomes one window padded at the end (a 2 s clip for BirdNET's 3 s
    input); a longer one is cut into ``k = ceil(clip_samples / samples)`` consecutive windows, the last padded.
    """
    n, length = clips.shape
    k = max(1, -(-length // samples))
    padded = np.zeros((n, k * samples), np.float32)
    padded[:, :length] = clips
    return padded.reshape(n, k, samples)


@dataclass
class BirdNetScorer:
    """Confidence = max over the target classes of ``sigmoid(logit)`` from BirdNET (sensitivity 1).

    Clips shorter than BirdNET's 3 s are zero-padded; longer ones take the max over their 3 s parts.

    Attributes:
        encoder: a :class:`~birdassets.models.birdnet.BirdNetEncoder` (``infer``, ``labels``, ``input_spec``).
        targets: labels as in BirdNET's label file (``"Scientific name_Common name"``); each may also be
            given as just the scientific or the common name.
    """

    encoder: object
    targets: Sequence[str]
    indices: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.indices = resolve_labels(self.encoder.labels, self.targets)

    @property
    def name(self) -> str:
        return f"{self.encoder.name}:" + "|".join(self.encoder.labels[i] for i in self.indices)

    @property
    def sample_rate(self) -> int:
        return self.encoder.input_spec.sample_rate

    def score(self, clips: np.ndarray) -> np.ndarray:
        windows = fit_clips(clips, self.encoder.input_spec.clip_samples)  # [n, k, 144000]
        n, k, samples = windows.shape
        _, logits = self.encoder.infer(windows.reshape(n * k, samples))  # [n * k, classes]
        best = logits[:, self.indices].max(axis=1).reshape(n, k).max(axis=1)
        return sigmoid(best)


@dataclass
class ProbeScorer:
    """Confidence = max over target classes of a trained probe's probability (mean over its fold models) on
    an encoder's embedding of the clip.

    The clip is fitted to the encoder's input (zero-padded, or split with the max taken over the parts):
    a mel encoder sees the stage-C input of ``preset``, a waveform encoder (BirdNET) the raw clip.

    Attributes:
        encoder: any :class:`~birdassets.models.base.Encoder`.
        params: the probe's parameters (:func:`birdassets.benchmark.load_probe`), leading fold axis.
        classes: the probe's class names, one per output.
        targets: target class names among ``classes``.
        preset: the mel frontend of a mel encoder (``None`` for waveform encoders).
        label: names the probe in ``name`` (e.g. ``"demo-clear/linear"``).
    """

    encoder: object
    params: dict
    classes: Sequence[str]
    targets: Sequence[str]
    preset: object = None
    label: str = "probe"
    indices: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.indices = resolve_labels(self.classes, self.targets)
        self._frontend = None
        if self.preset is not None:
            from birdassets.frontends.tf_mel import TFMelFrontend

            self._frontend = TFMelFrontend(self.preset)

    @property
    def name(self) -> str:
        return f"{self.encoder.name}+{self.label}:" + "|".join(self.classes[i] for i in self.indices)

    @property
    def sample_rate(self) -> int:
        return self.preset.sample_rate if self.preset is not None else self.encoder.input_spec.sample_rate

    def score(self, clips: np.ndarray) -> np.ndarray:
        from birdassets.probes import predict_probe

        samples = self.preset.clip_samples if self.preset is not None else self.encoder.input_spec.clip_samples
        windows = fit_clips(clips, samples)  # [n, k, samples]
        n, k, _ = windows.shape
        flat = windows.reshape(n * k, samples)
        inputs = self._frontend.model_input(flat).numpy() if self._frontend is not None else flat
        embeddings = np.asarray(self.encoder.embed(inputs), dtype=np.float32)  # [n * k, dim]
        probabilities = predict_probe(self.params, embeddings).mean(axis=0)  # [n * k, classes]
        return probabilities[:, self.indices].max(axis=1).reshape(n, k).max(axis=1)


@dataclass(frozen=True)
class BandEnergyScorer:
    """A classical energy detector: the fraction of a clip's power in ``[f_lo, f_hi]`` Hz, in [0, 1].

    Useful as a model-free baseline on hydrophone data (a call band against broadband noise).
    """

    f_lo: float
    f_hi: float
    sample_rate: int = 16_000

    @property
    def name(self) -> str:
        return f"band-energy:{self.f_lo:g}-{self.f_hi:g}Hz"

    def score(self, clips: np.ndarray) -> np.ndarray:
        spectrum = np.abs(np.fft.rfft(clips, axis=1)) ** 2  # [windows, freqs]
        freqs = np.fft.rfftfreq(clips.shape[1], 1.0 / self.sample_rate)
        band = (freqs >= self.f_lo) & (freqs <= self.f_hi)
        total = spectrum.sum(axis=1)
        return np.where(total > 0, spectrum[:, band].sum(axis=1) / np.maximum(total, 1e-30), 0.0)


def make_scorer(settings, encoder: str, targets: Sequence[str], probe: str | None = None) -> WindowScorer:
    """The scorer a user names: BirdNET's own logits, or ``probe = "<task>:<probe>"``, the probe the benchmark
    trained on ``task`` for ``encoder`` (``"birdnet"``/``"birdnet-v2.4"`` or any checkpoint key).

    Raises:
        ValueError: unknown targets, a malformed probe name, or an encoder without class logits and no probe.
        FileNotFoundError / CheckpointError: the probe or the checkpoint does not exist.
    """
    from birdassets.benchmark import load_probe
    from birdassets.models.registry import BIRDNET_KEY, load_encoder

    key = BIRDNET_KEY if encoder == "birdnet" else encoder
    loaded = load_encoder(settings.checkpoint_roots, key)
    if probe is None:
        if key != BIRDNET_KEY:
            raise ValueError(f"encoder {key!r} has no class logits: name a trained probe (--probe TASK:PROBE)")
        return BirdNetScorer(loaded.encoder, targets)
    task, _, name = probe.partition(":")
    if not task or not name:
        raise ValueError(f"probe {probe!r} must be '<task>:<probe>', e.g. 'demo-clear:linear'")
    params, classes = load_probe(settings, task, key, name)
    preset = settings.task_preset(task) if loaded.config is not None else None  # mel encoders need the frontend
    return ProbeScorer(loaded.encoder, params, classes, targets, preset=preset, label=f"{task}/{name}")


def resolve_labels(labels: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Indices of ``targets`` in ``labels`` (full label, scientific name or common name, case-insensitive)."""
    if not targets:
        raise ValueError("no target classes given")
    lookup: dict[str, int] = {}
    for index, label in enumerate(labels):
        for key in (label, *label.split("_", 1)):
            lookup.setdefault(key.strip().lower(), index)
    missing = [t for t in targets if t.strip().lower() not in lookup]
    if missing:
        raise ValueError(f"unknown target classes {missing}; give a label as in the model's label list "
                         f"(e.g. {labels[0]!r}), its scientific name or its common name")
    return np.array(sorted({lookup[t.strip().lower()] for t in targets}))


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
        """One row per window: ``file, start_s, duration_s, confidence, local_prediction, global_prediction,
        global_confidence``."""
        frames = [
            pd.DataFrame({
                "file": r.file, "start_s": r.start_s, "duration_s": r.clip_s, "confidence": r.confidence,
                "local_prediction": r.local_predictions, "global_prediction": r.global_prediction,
                "global_confidence": r.global_confidence,
            })
            for r in self.recordings
        ]
        columns = ["file", "start_s", "duration_s", "confidence", "local_prediction", "global_prediction",
                   "global_confidence"]
        return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)

    def to_dict(self) -> dict:
        return {
            "scorer": self.scorer,
            "config": asdict(self.config),
            "recordings": [r.to_dict() for r in self.recordings],
            "failed": [{"file": path, "reason": reason} for path, reason in self.failed],
        }

    def write(self, path: str | Path) -> Path:
        """Write JSON (``.json``) or one-row-per-window CSV (``.csv``) atomically."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            text = self.windows_frame().to_csv(index=False)
        elif path.suffix.lower() == ".json":
            text = json.dumps(self.to_dict(), indent=1)
        else:
            raise ValueError(f"{path}: detections are written as .json or .csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(tmp, path)
        return path


def detect_recordings(paths: Sequence[str | Path], scorer: WindowScorer, config: DetectionConfig) -> DetectionResult:
    """Score the sliding windows of every recording and apply the decision rule.

    Each recording is decoded once at ``scorer.sample_rate``; windows from all recordings are scored
    together in batches of :data:`SCORE_BATCH_WINDOWS`. Undecodable recordings go to ``failed``.
    """
    spec = config.windows(scorer.sample_rate)
    clips, starts, readable, durations, failed = [], [], [], [], []
    for path in paths:
        try:
            audio, _ = load(path, scorer.sample_rate)
        except AudioError as error:
            failed.append((str(path), str(error)))
            continue
        duration = len(audio) / scorer.sample_rate
        window_start = np.asarray(window_starts(duration, spec), dtype=np.float64)
        if duration < min(spec.clip_s, spec.min_last_s):
            window_start = window_start[:0]  # shorter than the shortest window kept: none (as OrcaHello)
        clips.append(cut_windows(audio, window_start, spec))
        starts.append(window_start)
        readable.append(str(path))
        durations.append(duration)
    all_clips = np.concatenate(clips) if clips else np.zeros((0, spec.clip_samples), np.float32)
    confidence = np.zeros(len(all_clips))
    for first in range(0, len(all_clips), SCORE_BATCH_WINDOWS):
        batch = all_clips[first : first + SCORE_BATCH_WINDOWS]
        confidence[first : first + len(batch)] = np.asarray(scorer.score(batch), dtype=np.float64)
    per_recording = np.split(confidence, np.cumsum([len(s) for s in starts])[:-1]) if starts else []
    recordings = []
    for path, duration, start, conf in zip(readable, durations, starts, per_recording, strict=True):
        prediction, global_confidence = decide(conf, config.threshold, config.min_num_positive_calls)
        recordings.append(
            RecordingDetections(
                file=path, duration_s=duration, start_s=start, confidence=conf, clip_s=config.clip_s,
                threshold=config.threshold, global_prediction=prediction, global_confidence=global_confidence,
            )
        )
    return DetectionResult(scorer.name, config, tuple(recordings), tuple(failed))
