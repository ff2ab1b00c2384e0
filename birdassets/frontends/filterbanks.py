"""The constant matrices of the frontends in NumPy, shared by the tf.signal and JAX implementations.

* :func:`mel_filterbank` matches ``librosa.filters.mel`` (Slaney or HTK scale, optional Slaney area
  normalisation). ``tf.signal.linear_to_mel_weight_matrix`` is HTK-scale, unnormalised and builds its
  triangles in mel rather than Hz, so it is *not* used here.
* :func:`filterbank_blocks` splits a filterbank into groups of bands with their few non-zero FFT bins, so
  ``power @ filterbank`` costs ~1/8 of the dense product (each bin feeds at most two triangles).
* :func:`hann_window` is the periodic Hann window of scipy/librosa/torch, in float64.
* :func:`linear_resize_matrix` is one axis of a half-pixel bilinear resize (OpenCV ``INTER_LINEAR``).
"""

from __future__ import annotations

import numpy as np

from birdassets.frontends.presets import MelPreset

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


def preset_filterbank(preset: MelPreset) -> np.ndarray:
    """The preset's filterbank, ``[n_fft // 2 + 1, n_mels]`` float64 holding float32-rounded weights.

    Built at ``preset.filterbank_rate`` when set (OrcaHello's legacy 16 kHz), else at the sample rate.
    The weights are rounded to float32 because ``librosa.filters.mel`` stores them so (its default dtype),
    and the parity reference is librosa.
    """
    p = preset
    rate = p.filterbank_rate or p.sample_rate
    weights = mel_filterbank(rate, p.n_fft, p.n_mels, p.f_min, p.f_max, p.mel_scale, p.mel_norm)
    return weights.astype(np.float32).astype(np.float64)


def filterbank_blocks(filterbank: np.ndarray, bands_per_block: int = 16) -> tuple[tuple[int, int, np.ndarray], ...]:
    """Block-sparse form of a ``[freqs, mels]`` filterbank: ``(bin_lo, bin_hi, weights [bin_hi - bin_lo, bands])``
    per group of ``bands_per_block`` consecutive bands, covering exactly the bins where the group is non-zero.

    ``concat([power[..., lo:hi] @ w for lo, hi, w in blocks], -1) == power @ filterbank`` (same terms, zero
    terms skipped). A group with no non-zero weight (empty filters, as in OrcaHello's legacy filterbank)
    keeps one bin of zero weights so the output still has every band.
    """
    blocks = []
    for first in range(0, filterbank.shape[1], bands_per_block):
        weights = filterbank[:, first : first + bands_per_block]  # [freqs, bands]
        used = np.flatnonzero(weights.any(axis=1))
        lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        blocks.append((lo, hi, weights[lo:hi]))
    return tuple(blocks)


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / N)``, ``[n_fft]`` float64 (scipy ``get_window("hann")``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """One axis of a bilinear resize, ``[out_size, in_size]`` float64 (each row sums to 1).

    Half-pixel centres without antialiasing, as OpenCV ``INTER_LINEAR`` and ``tf.image.resize`` bilinear:
    output ``i`` samples input coordinate ``(i + 0.5) * in_size / out_size - 0.5``, clamped to the edges,
    and interpolates linearly between its two neighbours. ``x [in] -> matrix @ x [out]``.
    """
    position = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    position = np.clip(position, 0.0, in_size - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = position - lower
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - frac)
    np.add.at(matrix, (rows, upper), frac)
    return matrix


def analysis_window(preset: MelPreset) -> np.ndarray:
    """``[n_fft]`` float64 periodic Hann, divided by its sum for ``spectrum_scale="window_sum"``."""
    window = hann_window(preset.n_fft)
    return window / window.sum() if preset.spectrum_scale == "window_sum" else window


def stage_c_matrices(preset: MelPreset, frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Resize matrices of stage C for a ``[frames, n_mels]`` input: ``([out_frames, frames], [out_mels, n_mels])``
    float32, or ``None`` when the preset does not resize."""
    size = preset.model_input.size
    if size is None:
        return None
    return (
        linear_resize_matrix(frames, size[0]).astype(np.float32),
        linear_resize_matrix(preset.n_mels, size[1]).astype(np.float32),
    )
