"""`birdassets spectrogram` writes arrays that match librosa; `bench_frontend` measures every implementation."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from birdassets.bench import bench_frontend, librosa_mel_db
from birdassets.frontends.presets import get_preset
from birdassets_tests.conftest import SHARED_AUDIO, tone, write_recording

pytest.importorskip("librosa", reason="librosa is the parity reference (pip install -e '.[test]')")


def spectrogram(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "birdassets.cli", "spectrogram", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_mel_db_of_a_whole_file_matches_librosa(tmp_path):
    from birdassets.audio.io import load

    preset = get_preset("birdclef2025")
    path = write_recording(tmp_path / "a.wav", tone(3000.0, 7.3, 44_100) + tone(800.0, 7.3, 44_100, seed=3), 44_100)
    out = tmp_path / "a.npy"
    done = spectrogram("--preset", "birdclef2025", "--stage", "mel_db", "--out", str(out), str(path))
    assert done.returncode == 0, done.stderr
    ours = np.load(out)
    audio, _ = load(path, preset.sample_rate)  # the same resampled signal
    ref = librosa_mel_db(audio.astype(np.float64), preset)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (1 + len(audio) // 512, 128)
    assert np.abs(ours - ref).max() < 5e-3


def test_model_input_is_the_first_window(tmp_path):
    path = write_recording(tmp_path / "b.wav", tone(3000.0, 2.0, 32_000), 32_000)  # shorter than a window
    out = tmp_path / "b.npy"
    done = spectrogram("--stage", "model_input", "--out", str(out), str(path))
    assert done.returncode == 0, done.stderr
    x = np.load(out)
    assert x.shape == (313, 128) and x.min() >= 0 and x.max() == pytest.approx(1.0)
    assert np.all(x[200:] == x[200, 0])  # zero-padded tail after 2 s sits at the floor


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"hello")
    done = spectrogram("--out", str(tmp_path / "x.npy"), str(bad))
    assert done.returncode == 2 and "not-audio.wav" in done.stderr
    done = spectrogram("--preset", "nope", "--out", str(tmp_path / "x.npy"), str(bad))
    assert done.returncode == 2 and "unknown preset 'nope'" in done.stderr


@pytest.mark.skipif(not SHARED_AUDIO.exists(), reason="../shared/audio (real field recordings) is not present")
def test_real_recording_stage_b_matches_librosa(tmp_path):
    from birdassets.audio.io import load
    from birdassets.frontends.tf_mel import TFMelFrontend

    preset = get_preset("birdclef2025")
    for name in ("birds_10s.wav", "great_plains_toad.wav"):
        audio, _ = load(SHARED_AUDIO / name, preset.sample_rate)
        ours = TFMelFrontend(preset).mel_db(audio[None]).numpy()[0]
        assert np.abs(ours - librosa_mel_db(audio.astype(np.float64), preset)).max() < 5e-3, name


def test_bench_frontend_reports_every_implementation():
    frame = bench_frontend(("birdclef2025",), seconds=10.0, repeats=1)
    assert {"librosa (whole file)", "tf.signal (whole file)", "tf.signal (5 s windows, one batch)"} <= set(frame["implementation"])
    assert (frame["audio_s_per_s"] > 0).all()
    librosa_row = frame[frame["implementation"] == "librosa (whole file)"].iloc[0]
    assert librosa_row["x_librosa"] == 1.0
    np.testing.assert_allclose(frame["x_librosa"], librosa_row["seconds"] / frame["seconds"])
