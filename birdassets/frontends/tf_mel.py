"""The tf.signal implementation of stages B and C, batched (used by the tf.data mel datasets)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from birdassets.frontends.filterbanks import mel_filterbank
from birdassets.frontends.presets import MelPreset


class TFMelFrontend:
    """Batched, traced-once mel frontend for one preset.

    ``mel_db(waves [batch, samples]) -> [batch, frames, mels]`` (stage B, dB) and
    ``model_input(waves) -> [batch, frames, mels]`` (stage C, float32) are ``tf.function`` s with a
    relaxed batch/sample dimension, so any batch size reuses one graph.
    """

    def __init__(self, preset: MelPreset):
        self.preset = preset
        fb = mel_filterbank(
            preset.sample_rate, preset.n_fft, preset.n_mels, preset.f_min, preset.f_max, preset.mel_scale, preset.mel_norm
        )
        self._filterbank = tf.constant(fb, dtype=tf.float32)  # [freqs, mels]
        spec = tf.TensorSpec([None, None], tf.float32)
        self.mel_db = tf.function(self._mel_db, input_signature=[spec], jit_compile=False)
        self.model_input = tf.function(self._model_input, input_signature=[spec], jit_compile=False)

    def _mel_db(self, waves: tf.Tensor) -> tf.Tensor:
        p = self.preset
        if p.center:
            pad = p.n_fft // 2
            waves = tf.pad(waves, [[0, 0], [pad, pad]], mode="REFLECT" if p.pad_mode == "reflect" else "CONSTANT")
        stft = tf.signal.stft(
            waves,
            frame_length=p.n_fft,
            frame_step=p.hop_length,
            fft_length=p.n_fft,
            window_fn=tf.signal.hann_window,  # periodic Hann, as scipy/librosa get_window("hann")
            pad_end=False,
        )  # [batch, frames, freqs] complex64
        magnitude = tf.abs(stft)
        power = tf.square(magnitude) if p.power == 2.0 else tf.pow(magnitude, p.power)
        mel = tf.tensordot(power, self._filterbank, axes=[[2], [0]])  # [batch, frames, mels]
        log10 = tf.math.log(tf.maximum(mel, p.amin)) / np.log(10.0)
        if p.db_ref == "max":
            ref_db = tf.reduce_max(log10, axis=[1, 2], keepdims=True)
        else:
            ref_db = tf.math.log(tf.maximum(tf.constant(float(p.db_ref)), p.amin)) / np.log(10.0)
        db = 10.0 * (log10 - ref_db)
        if p.top_db is not None:
            db = tf.maximum(db, tf.reduce_max(db, axis=[1, 2], keepdims=True) - p.top_db)
        return db

    def _model_input(self, waves: tf.Tensor) -> tf.Tensor:
        db = self._mel_db(waves)
        top = tf.reduce_max(db, axis=[1, 2], keepdims=True)
        return tf.clip_by_value((db - (top - self.preset.top_db)) / self.preset.top_db, 0.0, 1.0)
