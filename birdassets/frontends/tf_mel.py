"""The tf.signal implementation of stages B and C, batched (used by the tf.data mel datasets).

Stage B (framing, periodic Hann window, ``rfft``, ``|X| ** power``, block-sparse mel filterbank, log) is
XLA-compiled and returns float32; it computes in the preset's ``precision``
(:attr:`~birdassets.frontends.presets.MelPreset.stage_b_dtypes`). Window and FFT stay in float64 unless the
preset asks for ``"float32"``: the float32 FFTs of Eigen/XLA (and pocketfft) move bins 60-100 dB below a
frame's peak by 1e-3-1e-2 dB, which breaks even the 1e-3 dB bar of ``"mixed"``; after ``|X|^2`` float32 costs
~1e-5 dB. ``birdassets bench frontend`` times it against librosa. Stage C runs in float32.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from birdassets.frontends.filterbanks import analysis_window, filterbank_blocks, preset_filterbank, stage_c_matrices
from birdassets.frontends.presets import MelPreset

_LN10 = float(np.log(10.0))
GROUP_BYTES = 12 * 2**20  # windowed frames per group of rows (3 windows of 5 s at n_fft 1024, hop 320, float64)
PARALLEL_GROUPS = 2  # groups computed at once (inter-op threads)


class TFMelFrontend:
    """Batched, traced-once mel frontend for one preset.

    * ``mel_db(waves [batch, samples]) -> [batch, frames, n_mels]`` float32: stage B (dB for ``log="db"``,
      scaled natural log for ``log="ln"``), ``frames = preset.stft_frames(samples)``; the dB reference and
      ``top_db`` floor are per batch row (a window, or a whole file passed as one row).
    * ``to_model_input(mel_db [batch, preset.frames, n_mels]) -> [batch, *preset.input_shape]``: stage C.
    * ``model_input(waves [batch, clip_samples])``: both.

    All are ``tf.function`` s with relaxed batch/sample dimensions, so any batch size reuses one graph.
    """

    def __init__(self, preset: MelPreset):
        self.preset = preset
        spectrum_dtype, mel_dtype = preset.stage_b_dtypes
        self._window = tf.constant(analysis_window(preset), spectrum_dtype)  # [n_fft]
        self._filterbank = [  # block-sparse [freqs, mels]: (first bin, last bin + 1, [bins, bands])
            (lo, hi, tf.constant(weights, mel_dtype)) for lo, hi, weights in filterbank_blocks(preset_filterbank(preset))
        ]
        matrices = stage_c_matrices(preset, preset.frames)
        self._resize = None if matrices is None else tuple(tf.constant(m) for m in matrices)
        waves = tf.TensorSpec([None, None], tf.float32)
        mel = tf.TensorSpec([None, preset.frames, preset.n_mels], tf.float32)
        # XLA fuses framing, windowing, power and the log around the FFT and the block matmuls (~1.4x on CPU);
        # it compiles once per input shape (~0.2-0.5 s).
        self._group_frames = GROUP_BYTES // (preset.n_fft * np.dtype(spectrum_dtype).itemsize)
        self._group_mel_db = tf.function(self._mel_db, input_signature=[waves], jit_compile=True)
        self.mel_db = tf.function(self._grouped_mel_db, input_signature=[waves])
        self.to_model_input = tf.function(self._to_model_input, input_signature=[mel])
        self.model_input = tf.function(lambda w: self._to_model_input(self.mel_db(w)), input_signature=[waves])

    def _grouped_mel_db(self, waves: tf.Tensor) -> tf.Tensor:
        """``[batch, samples]`` -> ``[batch, frames, mels]``: stage B on groups of rows, ~:data:`GROUP_BYTES` of
        windowed frames each.

        A whole batch at once streams float64 frames and spectra 2-10x the audio's size (hundreds of MB) through
        memory; a group's stay in cache, and ``PARALLEL_GROUPS`` groups run at once (~1.6x on 2 cores where
        frames overlap most: ``birdset``, ``orcahello``). Every group has the same shape (the batch is
        zero-padded to whole groups), so XLA compiles once per window length. Rows are independent: the values
        are bit for bit those of one batch.
        """
        rows, samples = tf.shape(waves)[0], tf.shape(waves)[1]
        group = tf.maximum(self._group_frames // self.preset.stft_frames(samples), 1)  # rows per group
        one_group = tf.logical_and(rows > 0, rows <= group)  # a whole file, or a few windows: as they are
        return tf.cond(one_group, lambda: self._group_mel_db(waves), lambda: self._mel_db_in_groups(waves, group))

    def _mel_db_in_groups(self, waves: tf.Tensor, group: tf.Tensor) -> tf.Tensor:
        """:meth:`_grouped_mel_db` for a batch of more than ``group`` rows."""
        rows, samples = tf.shape(waves)[0], tf.shape(waves)[1]
        groups = tf.maximum((rows + group - 1) // group, 1)  # an empty batch computes one group of padding
        padded = tf.pad(waves, [[0, groups * group - rows], [0, 0]])
        mel = tf.map_fn(  # [groups, group, frames, mels]
            self._group_mel_db, tf.reshape(padded, [groups, group, samples]), parallel_iterations=PARALLEL_GROUPS,
            fn_output_signature=tf.TensorSpec([None, None, self.preset.n_mels], tf.float32),
        )
        return tf.reshape(mel, [groups * group, -1, self.preset.n_mels])[:rows]

    def _mel_db(self, waves: tf.Tensor) -> tf.Tensor:
        """``[batch, samples]`` float32 -> ``[batch, frames, mels]`` float32 stage B."""
        p = self.preset
        power = self._power(waves)
        mel = tf.concat(  # [batch, frames, mels] in the mel dtype; block-sparse filterbank
            [tf.tensordot(power[..., lo:hi], weights, axes=[[2], [0]]) for lo, hi, weights in self._filterbank], axis=-1
        )
        if p.log == "ln":
            return tf.cast(p.ln_scale * tf.math.log(tf.maximum(mel, p.ln_floor) + p.ln_offset), tf.float32)
        db = 10.0 / _LN10 * tf.math.log(tf.maximum(mel, p.amin))
        if p.db_ref == "max":
            db -= 10.0 / _LN10 * tf.math.log(tf.maximum(tf.reduce_max(mel, axis=[1, 2], keepdims=True), p.amin))
        else:
            db -= 10.0 * np.log10(max(float(p.db_ref), p.amin))
        if p.top_db is not None:
            db = tf.maximum(db, tf.reduce_max(db, axis=[1, 2], keepdims=True) - p.top_db)
        return tf.cast(db, tf.float32)

    def _power(self, waves: tf.Tensor) -> tf.Tensor:
        """``[batch, samples]`` -> ``|STFT| ** power`` ``[batch, frames, freqs]`` in the mel dtype (the window,
        FFT and ``|X|^2`` in the spectrum dtype)."""
        p = self.preset
        spectrum_dtype, mel_dtype = p.stage_b_dtypes
        x = tf.cast(waves, spectrum_dtype)
        if p.center:
            pad = p.n_fft // 2
            x = tf.pad(x, [[0, 0], [pad, pad]], mode="REFLECT" if p.pad_mode == "reflect" else "CONSTANT")
        frames = tf.signal.frame(x, p.n_fft, p.hop_length, axis=-1)  # [batch, frames, n_fft]
        spectrum = tf.signal.rfft(frames * self._window, fft_length=[p.n_fft])  # [batch, frames, freqs] complex
        power = tf.cast(tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum)), mel_dtype)
        if p.power == 1.0:
            return tf.math.sqrt(power)
        return power if p.power == 2.0 else tf.pow(power, p.power / 2.0)

    def _to_model_input(self, mel_db: tf.Tensor) -> tf.Tensor:
        spec = self.preset.model_input
        x = mel_db
        if spec.normalize == "minmax":
            low = tf.reduce_min(x, axis=[1, 2], keepdims=True)
            high = tf.reduce_max(x, axis=[1, 2], keepdims=True)
            x = (x - low) / (high - low + spec.eps)
        elif spec.normalize == "standardize":
            x = (x - spec.mean) / spec.std
        if self._resize is not None:
            resize_frames, resize_mels = self._resize
            x = tf.einsum("ot,btm->bom", resize_frames, x)
            x = tf.einsum("bom,nm->bon", x, resize_mels)
        if spec.frames is not None:
            x = x[:, : spec.frames]
            missing = spec.frames - tf.shape(x)[1]
            x = tf.pad(x, [[0, 0], [0, tf.maximum(missing, 0)], [0, 0]], constant_values=spec.pad_value)
            x = tf.ensure_shape(x, [None, spec.frames, None])
        return x
