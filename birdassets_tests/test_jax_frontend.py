"""The JAX mel frontend agrees with the tf.signal one (stages B and C), on synthetic and real audio, jitted."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from birdassets.audio.io import load
from birdassets.frontends import jax_mel
from birdassets.frontends.jax_mel import JaxMelFrontend, periodic_hann
from birdassets.frontends.presets import get_preset
from birdassets.frontends.tf_mel import TFMelFrontend
from birdassets_tests.conftest import SHARED_AUDIO

BASE = get_preset("birdclef2025")
VARIANTS = {
    "birdclef2025": BASE,
    "reflect": dataclasses.replace(BASE, pad_mode="reflect"),
    "htk_unnormalised": dataclasses.replace(BASE, mel_scale="htk", mel_norm=None),
    "hop320": dataclasses.replace(BASE, hop_length=320),
    "magnitude": dataclasses.replace(BASE, power=1.0),
    "fixed_ref": dataclasses.replace(BASE, db_ref=1.0),
}


def chirp(seconds: float = 5.0, rate: int = 32_000, seed: int = 0, gain: float = 1.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (2000 + 1500 * t) * t) + 0.05 * rng.standard_normal(len(t))
    return (gain * wave).astype(np.float32)


def synthetic_batch(size: int) -> np.ndarray:
    """``[size, 5 s]``: chirps + noise at gains from 1 down to 1e-4 (quiet windows test the per-window ref)."""
    return np.stack([chirp(seed=k, gain=10.0 ** -(k % 5)) for k in range(size)])


def max_differences(preset, waves, window=None) -> tuple[float, float]:
    """(max |dB| difference on stage B, max difference on stage C) between TF and JAX."""
    tf_frontend, jax_frontend = TFMelFrontend(preset), JaxMelFrontend(preset, window=window)
    db_tf, db_jax = tf_frontend.mel_db(waves).numpy(), np.asarray(jax_frontend.mel_db(waves))
    x_tf, x_jax = tf_frontend.model_input(waves).numpy(), np.asarray(jax_frontend.model_input(waves))
    shape = (len(waves), preset.frames, preset.n_mels)
    assert db_jax.shape == x_jax.shape == db_tf.shape == shape
    assert x_jax.dtype == np.float32 and 0.0 <= x_jax.min() and x_jax.max() == pytest.approx(1.0)
    return float(np.abs(db_tf - db_jax).max()), float(np.abs(x_tf - x_jax).max())


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("batch", [1, 5])
def test_matches_tf_on_synthetic_audio(name, batch):
    preset = VARIANTS[name]
    db_diff, x_diff = max_differences(preset, synthetic_batch(batch))
    assert db_diff < 1e-3, f"{name}: stage B differs by {db_diff} dB"
    assert x_diff < 1e-5, f"{name}: stage C differs by {x_diff}"


def test_periodic_hann_is_tf_window_to_one_ulp():
    for n_fft in (400, 1024, 2048):
        ours, theirs = periodic_hann(n_fft), tf.signal.hann_window(n_fft).numpy()
        assert ours.dtype == np.float32 and ours[0] == 0.0 and ours[n_fft // 2] == 1.0  # periodic, not symmetric
        assert np.abs(ours - theirs).max() <= np.float32(6e-8)


def test_per_window_reference_and_batch_independence():
    """Each window has its own 0 dB max; a window's result does not depend on its batch mates."""
    frontend = JaxMelFrontend(BASE)
    waves = synthetic_batch(3)
    batch = np.asarray(frontend.mel_db(waves))
    np.testing.assert_allclose(batch.max(axis=(1, 2)), 0.0, atol=1e-6)
    assert batch.min() >= -80.0
    quieter = np.asarray(frontend.mel_db(waves[:1] * 0.1))[0]  # referenced to its own max: same dB
    np.testing.assert_allclose(quieter, batch[0], atol=3e-3)
    fixed = JaxMelFrontend(dataclasses.replace(BASE, db_ref=1.0))
    loud_max, quiet_max = (float(np.asarray(fixed.mel_db(w)).max()) for w in (waves[:1], waves[:1] * 0.1))
    assert quiet_max == pytest.approx(loud_max - 20.0, abs=1e-3)  # fixed reference: -20 dB for gain 0.1
    np.testing.assert_allclose(np.asarray(frontend.mel_db(waves[2:3]))[0], batch[2], atol=1e-4)


def test_jit_compiles_once_per_shape():
    frontend = JaxMelFrontend(BASE)
    jax_mel.mel_db.clear_cache()
    for seed in range(3):
        frontend.mel_db(synthetic_batch(2) * (seed + 1))
    assert jax_mel.mel_db._cache_size() == 1
    frontend.mel_db(synthetic_batch(1))
    assert jax_mel.mel_db._cache_size() == 2


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        JaxMelFrontend(BASE).mel_db(chirp())
    with pytest.raises(ValueError, match="window shape"):
        JaxMelFrontend(BASE, window=np.ones(512, np.float32))
    with pytest.raises(ValueError, match="shorter than one STFT frame"):
        JaxMelFrontend(dataclasses.replace(BASE, center=False)).mel_db(np.zeros((1, 100), np.float32))


@pytest.fixture(scope="module")
def real_windows() -> np.ndarray:
    """The first 5 s of each shared field recording, resampled to 32 kHz, ``[recordings, 160000]``."""
    paths = sorted(SHARED_AUDIO.glob("*.wav")) if SHARED_AUDIO.is_dir() else []
    if not paths:
        pytest.skip(f"real recordings not found at {SHARED_AUDIO} (only present in CI / the dev workspace)")
    waves = [load(path, BASE.sample_rate, 0.0, BASE.clip_s)[0] for path in paths]
    return np.stack([np.pad(w, (0, BASE.clip_samples - len(w))) for w in waves])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_matches_tf_on_real_recordings_with_the_same_window(name, real_windows):
    """With TF's own Hann window the two implementations agree far below the required tolerance."""
    preset = VARIANTS[name]
    window = tf.signal.hann_window(preset.n_fft).numpy()
    db_diff, x_diff = max_differences(preset, real_windows, window=window)
    assert db_diff < 1e-3 and x_diff < 1e-5, (name, db_diff, x_diff)


@pytest.mark.parametrize("name", ["birdclef2025", "reflect", "hop320"])
def test_matches_tf_on_real_recordings_with_default_window(name, real_windows):
    preset = VARIANTS[name]
    db_diff, x_diff = max_differences(preset, real_windows)
    assert db_diff < 1e-3 and x_diff < 1e-5, (name, db_diff, x_diff)
