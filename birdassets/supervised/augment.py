"""Training-time augmentations of mel windows in the tf.data pipeline, deterministic under a stateless seed.

Every random draw is a TensorFlow *stateless* op (``tf.random.stateless_*``) of a seed derived from one ``[2]``
seed tensor, so a batch's augmentation depends on that seed and nothing else (no global RNG state, same result in
eager and graph mode, on every pass). Everything is vectorised over the batch: masks are broadcast comparisons of
``tf.range`` against sampled starts and widths, never a Python loop per window, so the ops run inside a
``tf.data`` ``map``.

The order, each step switchable in :class:`~birdassets.supervised.config.AugmentConfig`:

1. brightness/contrast: ``x' = clip((x - mean) * c + mean + b, 0, 1)`` per window, ``mean`` over the window;
2. SpecAugment masking: ``time_masks`` bands of frames and ``freq_masks`` bands of mel bins set to 0.0, each band's
   width ``~ U{0..max}`` and its start uniform among the starts that keep it inside the window;
3. mixup: each window mixed with its partner in a seeded permutation of the batch,
   ``x = lam * x_i + (1 - lam) * x_perm(i)``, labels with the same ``lam ~ Beta(alpha, alpha)``.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from birdassets.supervised.config import AugmentConfig

MASK_VALUE = 0.0
"""What SpecAugment writes into a masked band (the floor of the [0, 1] dB scale: silence)."""

GAMMA_FLOOR = float(np.finfo(np.float64).tiny)
"""Where ``tf.random.stateless_gamma`` (float64) clamps draws that underflow: the smallest normal float64."""


def augment_batch(
    mel: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, config: AugmentConfig
) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one batch of mel windows; the identity when every switch of ``config`` is off.

    Args:
        mel: ``[batch, frames, mels]`` values in [0, 1] (cast to float32).
        labels: ``[batch, classes]`` multi-hot or soft labels in [0, 1] (cast to float32).
        seed: ``[2]`` int32/int64 stateless seed; the same seed gives the same batch, bit for bit.
        config: which augmentations run, and their parameters.

    Returns:
        ``(mel, labels)``: float32, same shapes, values in [0, 1].
    """
    mel = tf.cast(mel, tf.float32)
    labels = tf.cast(labels, tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    if config.brightness_contrast:
        mel = brightness_contrast(mel, seeds[0], config.brightness, config.contrast)
    if config.spec_augment:
        mel = spec_augment(mel, seeds[1], config)
    if config.mixup:
        mel, labels = mixup(mel, labels, seeds[2], config.mixup_alpha)
    return mel, labels


def augmented(ds: tf.data.Dataset, config: AugmentConfig, seed: int) -> tf.data.Dataset:
    """``ds`` (batched ``(mel, labels)``) with :func:`augment_batch` applied to batch ``k`` under seed ``(seed, k)``.

    The batch index restarts at 0 on every pass over ``ds``, so two passes give identical batches; to vary the
    augmentation across epochs, give each epoch its own ``seed``. Returns ``ds`` itself when ``config`` is off.
    """
    if not config.active:
        return ds
    augment = traced_augment(config)

    def augment_indexed(index: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        mel, labels = batch
        return augment(mel, labels, tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)]))

    return ds.enumerate().map(augment_indexed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@functools.lru_cache(maxsize=16)
def traced_augment(config: AugmentConfig) -> tf.types.experimental.PolymorphicFunction:
    """:func:`augment_batch` under ``config`` as one ``tf.function``: traced once per batch shape, however many
    pipelines (one per fold) map it; no AutoGraph (its only branches are on ``config``, plain Python)."""
    return tf.function(functools.partial(augment_batch, config=config), autograph=False)


def brightness_contrast(mel: tf.Tensor, seed: tf.Tensor, brightness: float, contrast: float) -> tf.Tensor:
    """``clip((x - mean) * c + mean + b, 0, 1)`` per window, ``b ~ U(-brightness, brightness)``,
    ``c ~ U(1 - contrast, 1 + contrast)``, ``mean`` over the window's frames and mels. ``mel``: ``[batch, frames, mels]``.
    """
    batch = tf.shape(mel)[0]
    draws = tf.random.stateless_uniform([2, batch, 1, 1], seed, minval=-1.0, maxval=1.0)
    shift = draws[0] * brightness
    scale = 1.0 + draws[1] * contrast
    mean = tf.reduce_mean(mel, axis=[1, 2], keepdims=True)
    level = mean + shift  # [batch, 1, 1] first: keeps graph mode (tf.data) bit-identical to eager
    return tf.clip_by_value((mel - mean) * scale + level, 0.0, 1.0)


def spec_augment(mel: tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Set ``time_masks`` bands of frames and ``freq_masks`` bands of mel bins of each window to :data:`MASK_VALUE`.

    ``mel``: ``[batch, frames, mels]``; returns the same shape, unchanged outside the bands.
    """
    time_seed, freq_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    shape = tf.shape(mel)
    in_time = band_mask(shape[0], shape[1], config.time_masks, config.time_mask_max, time_seed)
    in_freq = band_mask(shape[0], shape[2], config.freq_masks, config.freq_mask_max, freq_seed)
    masked = in_time[:, :, None] | in_freq[:, None, :]
    return tf.where(masked, tf.constant(MASK_VALUE, mel.dtype), mel)


def band_mask(batch: tf.Tensor, length: tf.Tensor, count: int, max_width: int, seed: tf.Tensor) -> tf.Tensor:
    """``[batch, length]`` bool: True inside any of ``count`` bands per row.

    Each band's width is uniform on ``{0, ..., min(max_width, length)}``; its start is uniform on
    ``{0, ..., length - width}``, so the band lies inside the row.
    """
    widest = tf.minimum(tf.cast(max_width, tf.int32), length)
    draws = tf.random.stateless_uniform([2, batch, count, 1], seed)
    width = uniform_below(draws[0], widest + 1)
    start = uniform_below(draws[1], length - width + 1)
    position = tf.range(length)[None, None, :]
    inside = (position >= start) & (position < start + width)
    return tf.reduce_any(inside, axis=1)


def uniform_below(unit: tf.Tensor, bound: tf.Tensor) -> tf.Tensor:
    """int32 ``floor(unit * bound)`` clamped to ``bound - 1``: uniform on ``{0..bound-1}`` for ``unit ~ U[0, 1)``."""
    bound = tf.cast(bound, tf.int32)
    drawn = tf.cast(tf.floor(unit * tf.cast(bound, tf.float32)), tf.int32)
    return tf.minimum(drawn, bound - 1)


def mixup(mel: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix each window with its partner in a seeded permutation of the batch: ``lam * x_i + (1 - lam) * x_perm(i)``.

    ``lam ~ Beta(alpha, alpha)`` per window, the same ``lam`` for the labels. ``mel``: ``[batch, frames, mels]``,
    ``labels``: ``[batch, classes]``; both come back clipped to [0, 1] (rounding can step one ulp outside).
    """
    perm_seed, lam_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    batch = tf.shape(mel)[0]
    partner = tf.argsort(tf.random.stateless_uniform([batch], perm_seed))
    lam = beta_sample(batch, alpha, lam_seed)
    mixed_mel = mix(mel, tf.gather(mel, partner), lam[:, None, None])
    mixed_labels = mix(labels, tf.gather(labels, partner), lam[:, None])
    return mixed_mel, mixed_labels


def mix(own: tf.Tensor, other: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """``clip(lam * own + (1 - lam) * other, 0, 1)``."""
    return tf.clip_by_value(lam * own + (1.0 - lam) * other, 0.0, 1.0)


def beta_sample(batch: tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """``[batch]`` float32 draws of ``Beta(alpha, alpha) = G1 / (G1 + G2)``, ``G ~ Gamma(alpha)`` (stateless).

    The gammas are drawn in float64. For tiny ``alpha`` both can still underflow, and TensorFlow then clamps them to
    the smallest normal float (so their ratio would say 0.5, or 0/0 were they 0): such a ``lam`` is a fair coin on
    {0, 1} instead, the limit of ``Beta(alpha, alpha)`` as ``alpha -> 0``.
    """
    gamma_seed, coin_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    gammas = tf.random.stateless_gamma([2, batch], gamma_seed, alpha=tf.constant(alpha, tf.float64), dtype=tf.float64)
    resolved = tf.reduce_max(gammas, axis=0) > GAMMA_FLOOR
    total = tf.where(resolved, gammas[0] + gammas[1], 1.0)
    coin = tf.cast(tf.random.stateless_uniform([batch], coin_seed) < 0.5, tf.float64)
    lam = tf.where(resolved, gammas[0] / total, coin)
    return tf.cast(lam, tf.float32)
