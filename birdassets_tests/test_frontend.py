"""The tf.signal mel frontend: filterbank and stage B against librosa, stage A windows, stage C range, hashes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from birdassets.frontends.filterbanks import hz_to_mel, mel_filterbank, mel_to_hz
from birdassets.frontends.presets import MelPreset, PresetError, get_preset, window_starts
from birdassets.frontends.tf_mel import TFMelFrontend

librosa = pytest.importorskip("librosa", reason="librosa is the parity reference (pip install -e '.[test]')")


def chirp(seconds: float = 5.0, rate: int = 32_000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * (2000 + 1500 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("scale,norm", [("slaney", "slaney"), ("htk", None), ("slaney", None), ("htk", "slaney")])
def test_filterbank_equals_librosa(scale, norm):
    ours = mel_filterbank(32_000, 1024, 128, 50.0, 14_000.0, scale, norm)
    ref = librosa.filters.mel(
        sr=32_000, n_fft=1024, n_mels=128, fmin=50.0, fmax=14_000.0, htk=scale == "htk", norm=norm, dtype=np.float64
    ).T
    assert ours.shape == (513, 128)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_mel_scale_round_trip_and_knee():
    hz = np.array([0.0, 500.0, 1000.0, 4000.0, 16000.0])
    for scale in ("slaney", "htk"):
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz, scale), scale), hz, atol=1e-9)
    assert hz_to_mel(1000.0, "slaney") == pytest.approx(15.0)  # the Slaney linear/log knee


def test_stage_b_matches_librosa_melspectrogram_power_to_db():
    preset = get_preset("birdclef2025")
    y = chirp()
    ours = TFMelFrontend(preset).mel_db(y[None]).numpy()[0]
    power = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=32_000, n_fft=1024, hop_length=512, n_mels=128, fmin=50.0, fmax=14_000.0,
        center=True, pad_mode="constant", power=2.0,
    )
    ref = librosa.power_to_db(power, ref=np.max, top_db=80.0).T
    assert ours.shape == ref.shape == (preset.frames, preset.n_mels) == (313, 128)
    assert np.abs(ours - ref).max() < 5e-3  # float32 STFT vs librosa's float64


def test_stage_b_is_batched_per_window():
    """Each window is referenced to its own maximum: a batch gives the same as windows one by one."""
    preset = get_preset("birdclef2025")
    frontend = TFMelFrontend(preset)
    quiet, loud = chirp(seed=1) * 0.01, chirp(seed=2)
    batch = frontend.mel_db(np.stack([quiet, loud])).numpy()
    np.testing.assert_allclose(batch[0], frontend.mel_db(quiet[None]).numpy()[0], atol=1e-4)
    assert batch[0].max() == pytest.approx(0.0) and batch[1].max() == pytest.approx(0.0)


def test_stage_c_scales_to_unit_interval():
    preset = get_preset("birdclef2025")
    frontend = TFMelFrontend(preset)
    y = chirp()
    x = frontend.model_input(y[None]).numpy()[0]
    db = frontend.mel_db(y[None]).numpy()[0]
    assert x.min() >= 0.0 and x.max() == pytest.approx(1.0)
    np.testing.assert_allclose(x, (db + 80.0) / 80.0, atol=1e-6)


@pytest.mark.parametrize(
    "duration,expected",
    [(12.3, [0.0, 5.0, 10.0]), (10.9, [0.0, 5.0]), (11.0, [0.0, 5.0, 10.0]), (0.4, [0.0]), (5.0, [0.0]), (0.0, [])],
)
def test_window_starts(duration, expected):
    assert window_starts(duration, get_preset("birdclef2025")) == expected


def test_preset_hash_tracks_every_parameter():
    preset = get_preset("birdclef2025")
    assert preset.content_hash() == get_preset("birdclef2025").content_hash()
    for change in ({"hop_length": 320}, {"f_min": 0.0}, {"mel_norm": None}, {"top_db": 100.0}):
        assert dataclasses.replace(preset, **change).content_hash() != preset.content_hash()


def test_invalid_presets_name_the_problem():
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(PresetError, match="broken.*Nyquist"):
        MelPreset(name="broken", sample_rate=16_000, n_fft=512, hop_length=128, n_mels=64, f_min=0, f_max=12_000)
