"""Mel filterbanks in NumPy, shared by the tf.signal and JAX implementations.

Matches ``librosa.filters.mel`` (Slaney or HTK scale, optional Slaney area normalisation). Note that
``tf.signal.linear_to_mel_weight_matrix`` is HTK-scale and unnormalised, so it is *not* used here.
"""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3  # Slaney: linear region, Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Frequency (Hz) to mel on the Slaney (linear below 1 kHz, log above) or HTK scale."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-12) / _MIN_LOG_HZ) / _LOG_STEP, mel)


def mel_to_hz(mel: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    hz = mel * _F_SP
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    scale: str = "slaney",
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters as a ``[n_fft // 2 + 1, n_mels]`` float64 matrix (power @ matrix = mel power)."""
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [freqs]
    mel_edges = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2), scale)
    widths = np.diff(mel_edges)  # [n_mels + 1]
    ramps = mel_edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, freqs]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # [n_mels, freqs]
    if norm == "slaney":
        weights *= (2.0 / (mel_edges[2:] - mel_edges[:-2]))[:, None]
    elif norm is not None:
        raise ValueError(f"unknown mel norm {norm!r}; expected 'slaney' or None")
    return weights.T
