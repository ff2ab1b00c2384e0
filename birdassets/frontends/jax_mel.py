"""The JAX implementation of stages B and C, batched and jitted (for on-device use next to a model).

Numerically it follows :class:`birdassets.frontends.tf_mel.TFMelFrontend` step by step: centre padding
(``preset.pad_mode``), periodic Hann STFT, ``|X| ** power``, the NumPy mel filterbank of
:func:`birdassets.frontends.filterbanks.mel_filterbank`, ``10 log10`` against a per-window maximum or a
fixed reference, and a per-window ``top_db`` floor; stage C maps ``[max - top_db, max]`` dB to [0, 1].

The pure functions :func:`mel_db` and :func:`model_input` take the window and filterbank as arrays and the
preset as a static (hashable) argument, so they can be called inside any other jitted function;
:class:`JaxMelFrontend` binds the arrays of one preset.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from birdassets.frontends.filterbanks import mel_filterbank
from birdassets.frontends.presets import MelPreset

_LN10 = float(np.log(10.0))


def periodic_hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / N)``, ``[n_fft]`` float32.

    Evaluated in float32 arithmetic, step by step as ``tf.signal.hann_window`` does (to within one ulp),
    rather than in float64: the float32 rounding of the window (~2e-7) raises the sidelobe floor enough
    to move quiet mel bins next to loud ones by ~1e-3 dB, so the two frontends agree only if they share it.
    """
    count = np.arange(n_fft, dtype=np.float32)
    angle = np.float32(2.0 * np.pi) * count / np.float32(n_fft)
    return (np.float32(0.5) - np.float32(0.5) * np.cos(angle)).astype(np.float32)


def preset_filterbank(preset: MelPreset) -> np.ndarray:
    """The preset's mel filterbank, ``[n_fft // 2 + 1, n_mels]`` float32."""
    p = preset
    return mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.f_min, p.f_max, p.mel_scale, p.mel_norm).astype(
        np.float32
    )


def frame_indices(samples: int, n_fft: int, hop_length: int) -> np.ndarray:
    """Sample indices of every full STFT frame of a ``samples``-long signal, ``[frames, n_fft]`` int32."""
    if samples < n_fft:
        raise ValueError(f"signal of {samples} samples is shorter than one STFT frame of {n_fft} samples")
    frames = 1 + (samples - n_fft) // hop_length
    return (np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]).astype(np.int32)


@partial(jax.jit, static_argnames="preset")
def mel_db(waves: jax.Array, window: jax.Array, filterbank: jax.Array, preset: MelPreset) -> jax.Array:
    """Stage B: mel power in dB.

    Args:
        waves: ``[batch, samples]`` float32 waveforms at ``preset.sample_rate`` Hz.
        window: ``[n_fft]`` analysis window (:func:`periodic_hann`).
        filterbank: ``[n_fft // 2 + 1, n_mels]`` mel weights (:func:`preset_filterbank`).
        preset: static; supplies padding, hop, power, reference, ``amin`` and ``top_db``.

    Returns:
        ``[batch, frames, n_mels]`` float32 dB; with ``db_ref="max"`` each window's maximum is 0 dB, and
        values below ``max - top_db`` (per window) are raised to it.
    """
    p = preset
    waves = jnp.asarray(waves, jnp.float32)
    if waves.ndim != 2:
        raise ValueError(f"waves must be [batch, samples], got shape {waves.shape}")
    if p.center:
        pad = p.n_fft // 2
        waves = jnp.pad(waves, ((0, 0), (pad, pad)), mode="reflect" if p.pad_mode == "reflect" else "constant")
    frames = waves[:, frame_indices(waves.shape[1], p.n_fft, p.hop_length)]  # [batch, frames, n_fft]
    spectrum = jnp.fft.rfft(frames * window, n=p.n_fft, axis=-1)  # [batch, frames, freqs] complex64
    magnitude = jnp.abs(spectrum)
    power = jnp.square(magnitude) if p.power == 2.0 else magnitude**p.power
    mel = jnp.einsum("btf,fm->btm", power, filterbank, precision=jax.lax.Precision.HIGHEST)
    log10 = jnp.log(jnp.maximum(mel, p.amin)) / _LN10
    if p.db_ref == "max":
        ref_log10 = jnp.max(log10, axis=(1, 2), keepdims=True)
    else:
        ref_log10 = np.log(max(float(p.db_ref), p.amin)) / _LN10
    db = 10.0 * (log10 - ref_log10)
    if p.top_db is not None:
        db = jnp.maximum(db, jnp.max(db, axis=(1, 2), keepdims=True) - p.top_db)
    return db


@partial(jax.jit, static_argnames="preset")
def model_input(waves: jax.Array, window: jax.Array, filterbank: jax.Array, preset: MelPreset) -> jax.Array:
    """Stage C (``scaling="unit"``): ``[batch, samples] -> [batch, frames, n_mels]`` float32 in [0, 1].

    Each window's ``[max - top_db, max]`` dB range maps linearly onto [0, 1]; arguments as :func:`mel_db`.
    """
    db = mel_db(waves, window, filterbank, preset)
    top = jnp.max(db, axis=(1, 2), keepdims=True)
    return jnp.clip((db - (top - preset.top_db)) / preset.top_db, 0.0, 1.0)


class JaxMelFrontend:
    """Mel frontend for one preset, same API as :class:`~birdassets.frontends.tf_mel.TFMelFrontend`.

    ``mel_db(waves [batch, samples]) -> [batch, frames, mels]`` (stage B, dB) and
    ``model_input(waves) -> [batch, frames, mels]`` (stage C, float32 in [0, 1]) are jitted; each new
    ``(batch, samples)`` shape compiles once and is then reused.

    ``window`` (``[n_fft]``) overrides :func:`periodic_hann`; pass ``tf.signal.hann_window(n_fft).numpy()``
    for bit-identical windows with the TF frontend (the last-ulp rounding of ``cos`` differs between
    NumPy and TF's Eigen, which alone moves quiet bins by up to ~1e-3 dB).
    """

    def __init__(self, preset: MelPreset, window: np.ndarray | None = None):
        self.preset = preset
        window = periodic_hann(preset.n_fft) if window is None else np.asarray(window, dtype=np.float32)
        if window.shape != (preset.n_fft,):
            raise ValueError(f"preset {preset.name!r}: window shape {window.shape} is not ({preset.n_fft},)")
        self.window = jnp.asarray(window)  # [n_fft]
        self.filterbank = jnp.asarray(preset_filterbank(preset))  # [freqs, mels]

    def mel_db(self, waves: jax.Array | np.ndarray) -> jax.Array:
        """Stage B, ``[batch, samples] -> [batch, frames, mels]`` dB."""
        return mel_db(waves, self.window, self.filterbank, self.preset)

    def model_input(self, waves: jax.Array | np.ndarray) -> jax.Array:
        """Stage C, ``[batch, samples] -> [batch, frames, mels]`` in [0, 1]."""
        return model_input(waves, self.window, self.filterbank, self.preset)
