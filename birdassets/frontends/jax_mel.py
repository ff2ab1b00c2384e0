"""The JAX implementation of stages B and C, batched and jitted (for on-device use next to a model).

It follows :class:`birdassets.frontends.tf_mel.TFMelFrontend` step by step and shares its constants
(:mod:`birdassets.frontends.filterbanks`: analysis window, filterbank, resize matrices), so the two
agree to ~1e-6 on every preset.

Precision: stage B computes in the preset's ``precision``
(:attr:`~birdassets.frontends.presets.MelPreset.stage_b_dtypes`) when 64-bit types are enabled and returns
float32. :class:`JaxMelFrontend` enables them for its own calls only (``jax.enable_x64`` is a context manager,
and jit caches one program per setting). Called inside a float32-only jitted program, the pure functions compute
in float32 instead: same shapes, ~1e-2 dB on bins far below a window's peak.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from birdassets.frontends.filterbanks import analysis_window, filterbank_blocks, preset_filterbank, stage_c_matrices
from birdassets.frontends.presets import MelPreset

_LN10 = float(np.log(10.0))


def frame_signal(x: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """Every full frame of ``x`` ``[batch, samples]`` as ``[batch, frames, n_fft]``, by reshapes and slices.

    The signal is cut into blocks of ``g = gcd(n_fft, hop_length)`` samples; frame ``t`` is blocks
    ``t * hop/g ... t * hop/g + n_fft/g``, so the frames are ``n_fft / g`` strided slices of the block array
    (no gather with a ``[frames, n_fft]`` index table, which would be a huge constant for long files).
    """
    batch, samples = x.shape
    if samples < n_fft:
        raise ValueError(f"signal of {samples} samples is shorter than one STFT frame of {n_fft} samples")
    frames = 1 + (samples - n_fft) // hop_length
    g = math.gcd(n_fft, hop_length)
    step, width = hop_length // g, n_fft // g
    blocks = x[:, : (samples // g) * g].reshape(batch, samples // g, g)  # [batch, blocks, g]
    parts = [blocks[:, j : j + (frames - 1) * step + 1 : step] for j in range(width)]  # width x [batch, frames, g]
    return jnp.stack(parts, axis=2).reshape(batch, frames, n_fft)


def _stage_b_dtypes(preset: MelPreset) -> tuple[jnp.dtype, jnp.dtype]:
    """The preset's ``(spectrum, mel)`` dtypes; float32 both where 64-bit types are disabled."""
    if not jax.config.jax_enable_x64:
        return jnp.dtype(jnp.float32), jnp.dtype(jnp.float32)
    spectrum, mel = preset.stage_b_dtypes
    return jnp.dtype(spectrum), jnp.dtype(mel)


def _power(waves: jax.Array, p: MelPreset) -> jax.Array:
    """``[batch, samples]`` -> ``|STFT| ** power`` ``[batch, frames, freqs]`` in the mel dtype (window, FFT and
    ``|X|^2`` in the spectrum dtype)."""
    spectrum_dtype, mel_dtype = _stage_b_dtypes(p)
    x = jnp.asarray(waves).astype(spectrum_dtype)
    if x.ndim != 2:
        raise ValueError(f"waves must be [batch, samples], got shape {x.shape}")
    if p.center:
        pad = p.n_fft // 2
        x = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect" if p.pad_mode == "reflect" else "constant")
    window = analysis_window(p).astype(spectrum_dtype)  # [n_fft]
    frames = frame_signal(x, p.n_fft, p.hop_length) * window  # [batch, frames, n_fft]
    spectrum = jnp.fft.rfft(frames, n=p.n_fft, axis=-1)  # [batch, frames, freqs]
    power = (jnp.square(spectrum.real) + jnp.square(spectrum.imag)).astype(mel_dtype)
    if p.power == 1.0:
        return jnp.sqrt(power)
    return power if p.power == 2.0 else power ** (p.power / 2.0)


@partial(jax.jit, static_argnames="preset")
def mel_db(waves: jax.Array, preset: MelPreset) -> jax.Array:
    """Stage B.

    Args:
        waves: ``[batch, samples]`` float32 waveforms at ``preset.sample_rate`` Hz.
        preset: static; every STFT, filterbank and log parameter, and the compute ``precision``.

    Returns:
        ``[batch, preset.stft_frames(samples), n_mels]`` float32: dB (``log="db"``; with ``db_ref="max"``
        each row's maximum is 0 dB, and values below ``max - top_db`` per row are raised to it) or
        ``ln_scale * ln(max(mel, ln_floor) + ln_offset)`` (``log="ln"``).
    """
    p = preset
    power, mel_dtype = _power(waves, p), _stage_b_dtypes(p)[1]
    highest = jax.lax.Precision.HIGHEST
    mel = jnp.concatenate(  # [batch, frames, mels]; block-sparse filterbank (zero weights skipped)
        [
            jnp.einsum("btf,fm->btm", power[..., lo:hi], weights.astype(mel_dtype), precision=highest)
            for lo, hi, weights in filterbank_blocks(preset_filterbank(p))
        ],
        axis=-1,
    )
    if p.log == "ln":
        return (p.ln_scale * jnp.log(jnp.maximum(mel, p.ln_floor) + p.ln_offset)).astype(jnp.float32)
    db = 10.0 / _LN10 * jnp.log(jnp.maximum(mel, p.amin))
    if p.db_ref == "max":
        db = db - 10.0 / _LN10 * jnp.log(jnp.maximum(jnp.max(mel, axis=(1, 2), keepdims=True), p.amin))
    else:
        db = db - 10.0 * np.log10(max(float(p.db_ref), p.amin))
    if p.top_db is not None:
        db = jnp.maximum(db, jnp.max(db, axis=(1, 2), keepdims=True) - p.top_db)
    return db.astype(jnp.float32)


@partial(jax.jit, static_argnames="preset")
def to_model_input(mel: jax.Array, preset: MelPreset) -> jax.Array:
    """Stage C: ``[batch, frames, n_mels]`` stage-B output to ``[batch, *preset.input_shape]`` float32.

    Normalisation, then bilinear resize, then time crop/pad, as :class:`~birdassets.frontends.presets.ModelInputSpec`.
    """
    spec = preset.model_input
    x = jnp.asarray(mel, jnp.float32)
    if spec.normalize == "minmax":
        low = jnp.min(x, axis=(1, 2), keepdims=True)
        high = jnp.max(x, axis=(1, 2), keepdims=True)
        x = (x - low) / (high - low + spec.eps)
    elif spec.normalize == "standardize":
        x = (x - spec.mean) / spec.std
    matrices = stage_c_matrices(preset, x.shape[1])
    if matrices is not None:
        highest = jax.lax.Precision.HIGHEST
        x = jnp.einsum("ot,btm->bom", matrices[0], x, precision=highest)
        x = jnp.einsum("bom,nm->bon", x, matrices[1], precision=highest)
    if spec.frames is not None:
        x = x[:, : spec.frames]
        x = jnp.pad(x, ((0, 0), (0, spec.frames - x.shape[1]), (0, 0)), constant_values=spec.pad_value)
    return x


@partial(jax.jit, static_argnames="preset")
def model_input(waves: jax.Array, preset: MelPreset) -> jax.Array:
    """Stages B and C: ``[batch, clip_samples] -> [batch, *preset.input_shape]`` float32."""
    return to_model_input(mel_db(waves, preset), preset)


class JaxMelFrontend:
    """Mel frontend for one preset, same API as :class:`~birdassets.frontends.tf_mel.TFMelFrontend`.

    ``mel_db(waves [batch, samples]) -> [batch, frames, mels]`` (stage B),
    ``to_model_input(mel_db) -> [batch, *input_shape]`` (stage C) and ``model_input(waves)`` (both), each
    jitted once per input shape and run with 64-bit types enabled for the preset's stage-B ``precision``.
    """

    def __init__(self, preset: MelPreset):
        self.preset = preset

    def mel_db(self, waves: jax.Array | np.ndarray) -> jax.Array:
        """Stage B, ``[batch, samples] -> [batch, frames, mels]`` float32."""
        with jax.enable_x64(True):
            return mel_db(jnp.asarray(waves, jnp.float32), self.preset)

    def to_model_input(self, mel: jax.Array | np.ndarray) -> jax.Array:
        """Stage C, ``[batch, frames, mels] -> [batch, *input_shape]`` float32."""
        return to_model_input(jnp.asarray(mel, jnp.float32), self.preset)

    def model_input(self, waves: jax.Array | np.ndarray) -> jax.Array:
        """Stages B and C, ``[batch, clip_samples] -> [batch, *input_shape]`` float32."""
        with jax.enable_x64(True):
            return model_input(jnp.asarray(waves, jnp.float32), self.preset)
