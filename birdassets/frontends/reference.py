"""Parity references: librosa computing each preset's stage B, and a plain-NumPy stage C.

These are what the tests and ``birdassets bench frontend`` compare the tf.signal and JAX frontends
against; they are written from the libraries' documented semantics, not from the frontends' code:

* stage B: ``librosa.feature.melspectrogram`` on the **float64** waveform (librosa computes in the input's
  precision; its float32 path is ~1e-5 dB off on quiet bins), then ``librosa.power_to_db`` or
  the preset's scaled natural log. ``filterbank_rate`` becomes librosa's ``sr`` (it only sets the filters),
  ``spectrum_scale="window_sum"`` divides the waveform by the window's sum (the STFT is linear).
* stage C: per-pixel bilinear interpolation (OpenCV ``INTER_LINEAR`` coordinates) with NumPy indexing.

librosa is a test/bench dependency (``pip install -e ".[test]"``); importing this module needs it.
"""

from __future__ import annotations

import warnings

import numpy as np

from birdassets.frontends.presets import MelPreset


def librosa_mel_db(audio: np.ndarray, preset: MelPreset, dtype=np.float64) -> np.ndarray:
    """Stage B by librosa: ``[samples] -> [frames, n_mels]`` float64 (``1 + samples // hop`` frames if centred).

    ``dtype=np.float32`` runs librosa's own float32 path (what a user calling librosa on float32 audio gets;
    used for timing in the benchmark).
    """
    import librosa

    p = preset
    y = np.asarray(audio, dtype=dtype)
    if p.spectrum_scale == "window_sum":
        y = y / dtype(0.5 * p.n_fft)  # the periodic Hann window of n_fft samples sums to n_fft / 2
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Empty filters detected")  # orcahello's legacy filterbank
        mel = librosa.feature.melspectrogram(
            y=y,
            sr=p.filterbank_rate or p.sample_rate,
            n_fft=p.n_fft,
            hop_length=p.hop_length,
            window="hann",
            center=p.center,
            pad_mode=p.pad_mode,
            power=p.power,
            n_mels=p.n_mels,
            fmin=p.f_min,
            fmax=p.f_max,
            htk=p.mel_scale == "htk",
            norm=p.mel_norm,
        )  # [mels, frames]
    if p.log == "ln":
        out = p.ln_scale * np.log(np.maximum(mel, p.ln_floor) + p.ln_offset)
    else:
        ref = np.max if p.db_ref == "max" else float(p.db_ref)
        out = librosa.power_to_db(mel, ref=ref, amin=p.amin, top_db=p.top_db)
    return out.T


def bilinear_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``[rows, cols]`` to ``size`` by per-pixel bilinear interpolation, half-pixel centres, clamped edges.

    For output pixel ``(i, j)``: source ``y = (i + 0.5) * rows / out_rows - 0.5`` (likewise ``x``), clamped to
    ``[0, rows - 1]``; the value interpolates the four neighbours ``floor(y), floor(y) + 1`` x ``floor(x), floor(x) + 1``.
    """
    rows, cols = image.shape
    y = np.clip((np.arange(size[0]) + 0.5) * rows / size[0] - 0.5, 0, rows - 1)[:, None]  # [out_rows, 1]
    x = np.clip((np.arange(size[1]) + 0.5) * cols / size[1] - 0.5, 0, cols - 1)[None, :]  # [1, out_cols]
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, rows - 1), np.minimum(x0 + 1, cols - 1)
    wy, wx = y - y0, x - x0
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def numpy_model_input(mel_db: np.ndarray, preset: MelPreset) -> np.ndarray:
    """Stage C of one window in NumPy float64: ``[frames, n_mels] -> preset.input_shape``."""
    spec = preset.model_input
    x = np.asarray(mel_db, dtype=np.float64)
    if spec.normalize == "minmax":
        x = (x - x.min()) / (x.max() - x.min() + spec.eps)
    elif spec.normalize == "standardize":
        x = (x - spec.mean) / spec.std
    if spec.size is not None:
        x = bilinear_resize(x, spec.size)
    if spec.frames is not None:
        x = x[: spec.frames]
        x = np.concatenate([x, np.full((spec.frames - len(x), x.shape[1]), spec.pad_value)])
    return x
