"""Tests that kill mutants of ``detection/`` that survived the mutation run (issue #10).

Each test names the mutant it kills; expected values are written out by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from birdassets.detection import (
    DetectionConfig,
    DetectionResult,
    ProbeScorer,
    RecordingDetections,
    fit_clips,
    resolve_labels,
    score_windows,
)
from birdassets.frontends.presets import PRESETS


def _recording(file: str, confidence: list[float]) -> RecordingDetections:
    """Windows every 1 s of 2 s clips, threshold 0.5, with the given confidences."""
    return RecordingDetections(
        file=file, duration_s=float(len(confidence) + 1), start_s=np.arange(len(confidence), dtype=np.float64),
        confidence=np.array(confidence), clip_s=2.0, threshold=0.5, global_prediction=0, global_confidence=0.0,
    )


def test_json_segments_have_the_documented_keys():
    """Kills ``RecordingDetections.to_dict``: the ``positive`` key of a segment renamed."""
    document = _recording("a.wav", [0.75, 0.25]).to_dict()
    assert document["segments"] == [
        {"start_time_s": 0.0, "duration_s": 2.0, "confidence": 0.75, "positive": 1},
        {"start_time_s": 1.0, "duration_s": 2.0, "confidence": 0.25, "positive": 0},
    ]


def test_window_table_is_numbered_across_recordings(tmp_path):
    """Kills ``DetectionResult.windows_frame``: ``ignore_index`` dropped (index 0, 1, 0 instead of 0, 1, 2)."""
    result = DetectionResult("band", DetectionConfig(), (_recording("a.wav", [0.75, 0.25]), _recording("b.wav", [0.5])))
    frame = result.windows_frame()
    assert frame.index.tolist() == [0, 1, 2]
    assert frame["file"].tolist() == ["a.wav", "a.wav", "b.wav"]
    written = json.loads(result.write(tmp_path / "d.json").read_text())
    assert [len(r["segments"]) for r in written["recordings"]] == [2, 1]


def test_json_document_lists_the_failed_files(tmp_path):
    """Kills ``DetectionResult.to_dict``: the ``failed`` key renamed."""
    result = DetectionResult("band", DetectionConfig(), (), (("bad.wav", "bad.wav: not audio"),))
    written = json.loads(result.write(tmp_path / "d.json").read_text())
    assert written["failed"] == [{"file": "bad.wav", "reason": "bad.wav: not audio"}]
    assert written["recordings"] == []


@pytest.mark.parametrize(
    "fields,problem",
    [
        ({"clip_s": 0.0}, "clip_s and hop_s must be > 0"),  # the message replaced by None (a TypeError)
        ({"min_last_s": 3.0}, "min_last_s must be within [0, clip_s]"),  # the message altered
    ],
)
def test_detection_config_names_the_problem(fields, problem):
    """Kills ``DetectionConfig.__post_init__`` message mutants."""
    with pytest.raises(ValueError) as raised:
        DetectionConfig(**fields)
    assert str(raised.value) == f"invalid detection config: {problem}"


class _CountingScorer:
    """Confidence = a window's first sample; records the size of every batch it is given."""

    name, sample_rate = "first-sample", 16_000

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, clips: np.ndarray) -> np.ndarray:
        self.batches.append(len(clips))
        return clips[:, 0]


def test_windows_are_scored_in_batches_of_256():
    """Kills ``score_windows``: ``range(0, n)`` without the batch step (600 overlapping calls, same numbers)."""
    clips = np.zeros((600, 4), np.float32)
    clips[:, 0] = np.arange(600) / 1000
    scorer = _CountingScorer()
    confidence = score_windows(clips, scorer)
    assert scorer.batches == [256, 256, 88]
    assert confidence[[0, 255, 256, 599]].tolist() == pytest.approx([0.0, 0.255, 0.256, 0.599])


def test_fitted_clips_are_float32():
    """Kills ``fit_clips``: the padded buffer created as float64 (twice the memory; encoders take float32)."""
    windows = fit_clips(np.ones((2, 5), np.float32), 3)
    assert windows.dtype == np.float32 and windows.shape == (2, 2, 3)
    assert windows[0].tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_common_names_may_contain_underscores():
    """Kills ``resolve_labels``: ``rsplit`` for ``split`` (the label splits at its FIRST underscore)."""
    assert resolve_labels(["Aus bus_Grey_duck", "Cus dus_Teal"], ["grey_duck", "Cus dus"]).tolist() == [0, 1]


class _ShapeRecordingEncoder:
    """Embeds anything as ``[1, 0]`` and records the shape of what it was given."""

    name = "shape-recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        self.seen.append(inputs.shape)
        return np.tile(np.array([1.0, 0.0], np.float32), (len(inputs), 1))


def test_probe_scorer_feeds_a_mel_encoder_its_presets_model_input():
    """Kills ``ProbeScorer.__post_init__``: the mel frontend dropped (the encoder got raw audio).

    birdset: 5 s at 32 kHz = 160,000 samples, hop 320, centred: 1 + 160000 // 320 = 501 frames of 128 mels. One
    centroid ``[1, 0]`` with positives: cosine 1, confidence (1 + 1) / 2 = 1.
    """
    encoder = _ShapeRecordingEncoder()
    params = {"centroids": np.array([[[1.0, 0.0]]], np.float32), "positive_weight": np.array([[1.0]], np.float32)}
    scorer = ProbeScorer(encoder, params, ["orca"], ["orca"], preset=PRESETS["birdset"])
    confidence = scorer.score(np.zeros((1, 160_000), np.float32))
    assert encoder.seen == [(1, 501, 128)]
    assert confidence.tolist() == [1.0]
