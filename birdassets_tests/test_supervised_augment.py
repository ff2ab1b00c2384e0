"""The supervised system's tf.data augmentations, checked against references computed here with numpy.

Each check recovers what the augmentation did from its output alone (the mixup ``lam`` and partner, the masked
bands, the affine brightness/contrast map) and holds it to the contract of
:class:`~birdassets.supervised.config.AugmentConfig`. Tiny windows keep the whole file to seconds.
"""

from __future__ import annotations

import birdassets  # noqa: F401  (sets the Keras backend before anything imports it)
import numpy as np
import pytest
import tensorflow as tf

from birdassets.supervised.augment import augment_batch, augmented
from birdassets.supervised.config import AugmentConfig

OFF = AugmentConfig.off()
MIXUP_ONLY = AugmentConfig(mixup=True, spec_augment=False, brightness_contrast=False)
BRIGHTNESS_ONLY = AugmentConfig(mixup=False, spec_augment=False, brightness_contrast=True, brightness=0.1, contrast=0.2)


def masks_only(**masks: int) -> AugmentConfig:
    return AugmentConfig(mixup=False, brightness_contrast=False, spec_augment=True, **masks)


def windows(batch: int, frames: int = 16, mels: int = 12, low: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, 1.0, (batch, frames, mels)).astype(np.float32)


def multi_hot(batch: int, classes: int = 7, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(size=(batch, classes)) < 0.4).astype(np.float32)


def run(mel, labels, seed, config) -> tuple[np.ndarray, np.ndarray]:
    out_mel, out_labels = augment_batch(mel, labels, tf.constant(seed, tf.int64), config)
    assert out_mel.dtype == tf.float32 and out_labels.dtype == tf.float32
    assert out_mel.shape == np.shape(mel) and out_labels.shape == np.shape(labels)
    return out_mel.numpy(), out_labels.numpy()


def recover_mixup(x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window i, the partner j and ``lam`` with ``out_i = lam x_i + (1 - lam) x_j`` (least squares, float64).

    Returns ``(partner [B], lam [B], residual [B])``; a window mixed with itself gets ``lam = nan``.
    """
    flat, mixed = x.reshape(len(x), -1).astype(np.float64), out.reshape(len(out), -1).astype(np.float64)
    diff = flat[:, None, :] - flat[None, :, :]                     # x_i - x_j   [i, j, n]
    excess = mixed[:, None, :] - flat[None, :, :]                  # out_i - x_j [i, j, n]
    power = (diff**2).sum(-1)
    lam = np.where(power > 0, (excess * diff).sum(-1) / np.where(power > 0, power, 1.0), np.nan)
    residual = np.abs(excess - np.nan_to_num(lam)[..., None] * diff).max(-1)
    partner = residual.argmin(1)
    rows = np.arange(len(x))
    return partner, lam[rows, partner], residual[rows, partner]


def runs(rows: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per row of a bool ``[B, L]`` array, its maximal runs of True as ``(start, width)``."""
    found = []
    for row in rows:
        edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        found.append(list(zip(starts.tolist(), (ends - starts).tolist())))
    return found


# (1) mixup ---------------------------------------------------------------------------------------------------


def test_mixup_is_one_convex_combination_per_window_for_mel_and_labels():
    x, y = windows(48), multi_hot(48)
    out, out_labels = run(x, y, [3, 9], MIXUP_ONLY)
    assert not np.allclose(out, x)
    partner, lam, residual = recover_mixup(x, out)
    assert residual.max() < 1e-6
    mixed = ~np.isnan(lam)
    identified = mixed & (lam < 1 - 1e-5)  # lam within float32 rounding of 1 leaves the partner unknowable
    assert identified.sum() >= 40
    assert len(set(partner[identified].tolist())) == identified.sum(), "partners come from a permutation"
    assert np.all((lam[mixed] >= -1e-6) & (lam[mixed] <= 1 + 1e-6))
    lam_or_one = np.where(mixed, lam, 1.0)[:, None]
    expected_labels = lam_or_one * y + (1 - lam_or_one) * y[partner]
    np.testing.assert_allclose(out_labels, expected_labels, atol=1e-6, rtol=0)
    assert np.any(np.abs(out_labels - y) > 0.05), "labels must be mixed too"


def test_mixup_lam_follows_beta_alpha_alpha():
    """One-hot labels expose each window's lam and partner directly; Beta(0.5, 0.5) puts 1/3 of its mass in
    (0.25, 0.75), Beta(4, 4) 0.82 of it."""
    batch = 1024
    x, identity = windows(batch, frames=2, mels=2), np.eye(batch, dtype=np.float32)
    for alpha, expected in ((0.5, 1 / 3), (4.0, 0.8204)):
        out, out_labels = run(x, identity, [5, int(alpha * 10)], AugmentConfig(
            mixup=True, mixup_alpha=alpha, spec_augment=False, brightness_contrast=False))
        lam = np.diag(out_labels).astype(np.float64)
        others = out_labels - np.diag(np.diag(out_labels))
        partner = np.where(others.max(1) > 0, others.argmax(1), np.arange(batch))
        lam = np.where(partner == np.arange(batch), 1.0, lam)
        np.testing.assert_allclose(out, lam[:, None, None] * x + (1 - lam[:, None, None]) * x[partner], atol=1e-6)
        middle = np.mean((lam > 0.25) & (lam < 0.75))
        assert abs(middle - expected) < 0.05, (alpha, middle)
        assert abs(lam.mean() - 0.5) < 0.05


def test_tiny_alpha_gives_no_nan():
    config = AugmentConfig(mixup=True, mixup_alpha=1e-3, spec_augment=False, brightness_contrast=False)
    out, out_labels = run(windows(256), np.eye(256, dtype=np.float32), [1, 1], config)
    assert np.isfinite(out).all() and np.isfinite(out_labels).all()
    lam = np.diag(out_labels)
    assert np.mean((lam < 1e-3) | (lam > 1 - 1e-3)) > 0.9, "Beta(1e-3, 1e-3) is almost a coin on {0, 1}"


# (2) SpecAugment ---------------------------------------------------------------------------------------------


def masked_bands(x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(time_rows [B, frames], freq_cols [B, mels])`` fully zeroed, after checking nothing else changed."""
    zero = out == 0.0
    time_rows, freq_cols = zero.all(axis=2), zero.all(axis=1)
    np.testing.assert_array_equal(zero, time_rows[:, :, None] | freq_cols[:, None, :])
    np.testing.assert_array_equal(out[~zero], x[~zero])
    return time_rows, freq_cols


@pytest.mark.parametrize("count", [1, 2, 3])
def test_masks_are_bands_within_count_and_width(count):
    x = windows(400, frames=16, mels=12, low=0.2)
    out, _ = run(x, multi_hot(400), [7, count], masks_only(time_masks=count, time_mask_max=5,
                                                           freq_masks=count, freq_mask_max=3))
    time_rows, freq_cols = masked_bands(x, out)
    for rows, widest in ((time_rows, 5), (freq_cols, 3)):
        bands = runs(rows)
        assert max(len(b) for b in bands) <= count
        assert rows.sum(1).max() <= count * widest
        if count == 1:
            assert max(w for b in bands for _, w in b) == widest
        assert any(len(b) == count for b in bands)


def test_mask_width_and_start_are_uniform_inside_the_window():
    """One time mask, max 6 over 16 frames: width ~ U{0..6}, start ~ U{0..16-width}."""
    frames, widest, batch = 16, 6, 4000
    x = windows(batch, frames=frames, mels=4, low=0.2)
    out, _ = run(x, multi_hot(batch), [11, 0], masks_only(time_masks=1, time_mask_max=widest, freq_masks=0))
    time_rows, freq_cols = masked_bands(x, out)
    assert not freq_cols.any()
    width = time_rows.sum(1)
    counts = np.bincount(width, minlength=widest + 1)
    assert len(counts) == widest + 1
    np.testing.assert_allclose(counts / batch, 1 / (widest + 1), atol=0.03)
    touch_first = np.mean(time_rows[:, 0])
    touch_last = np.mean(time_rows[:, -1])
    expected = sum(1 / (widest + 1) / (frames - w + 1) for w in range(1, widest + 1))
    assert abs(touch_first - expected) < 0.02 and abs(touch_last - expected) < 0.02, (touch_first, expected)


@pytest.mark.parametrize("masks", [dict(time_mask_max=0, freq_mask_max=0), dict(time_masks=0, freq_masks=0)])
def test_empty_masks_are_the_identity(masks):
    x = windows(32, low=0.2)
    out, _ = run(x, multi_hot(32), [1, 2], masks_only(**masks))
    np.testing.assert_array_equal(out, x)


def test_mask_wider_than_the_window_is_capped():
    x = windows(300, frames=4, mels=6, low=0.2)
    out, _ = run(x, multi_hot(300), [2, 2], masks_only(time_masks=1, time_mask_max=50, freq_masks=0))
    time_rows, _ = masked_bands(x, out)
    assert set(time_rows.sum(1).tolist()) == {0, 1, 2, 3, 4}


# (3) range ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill", ["uniform", "zeros", "ones", "binary"])
def test_everything_on_stays_in_unit_range(fill):
    rng = np.random.default_rng(4)
    x = {"uniform": rng.uniform(size=(16, 16, 12)), "zeros": np.zeros((16, 16, 12)),
         "ones": np.ones((16, 16, 12)), "binary": rng.integers(0, 2, (16, 16, 12))}[fill].astype(np.float32)
    labels = multi_hot(16).astype(np.uint8)
    strong = AugmentConfig(brightness=1.0, contrast=0.99, mixup_alpha=0.2, time_mask_max=30, freq_mask_max=30)
    for config in (AugmentConfig(), strong):
        for seed in range(6):
            out, out_labels = run(x, labels, [seed, 17], config)
            assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
            assert np.isfinite(out_labels).all() and out_labels.min() >= 0.0 and out_labels.max() <= 1.0


# (4) identity when off ---------------------------------------------------------------------------------------


def batched(x: np.ndarray, y: np.ndarray, batch: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_off_is_bit_exact_identity():
    x, y = windows(8), multi_hot(8)
    out, out_labels = run(x, y, [1, 2], OFF)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(out_labels, y)
    ds = batched(x, y, 3)
    assert augmented(ds, OFF, 42) is ds
    for (mel, labels), (mel_in, labels_in) in zip(augmented(ds, OFF, 42), ds, strict=True):
        np.testing.assert_array_equal(mel.numpy(), mel_in.numpy())
        np.testing.assert_array_equal(labels.numpy(), labels_in.numpy())


# (5) determinism ---------------------------------------------------------------------------------------------


def test_same_seed_same_batch_other_seed_other_batch():
    x, y = windows(16), multi_hot(16)
    first = run(x, y, [42, 0], AugmentConfig())
    again = run(x, y, [42, 0], AugmentConfig())
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for other in ([42, 1], [43, 0]):
        assert not np.allclose(run(x, y, other, AugmentConfig())[0], first[0])


def test_pipeline_is_deterministic_and_seeds_each_batch_by_its_index():
    x, y = windows(4), multi_hot(4)
    repeated = np.concatenate([x] * 3), np.concatenate([y] * 3)
    pipeline = augmented(batched(*repeated, 4).concatenate(batched(x[:3], y[:3], 3)), AugmentConfig(), 42)
    passes = [[tuple(t.numpy() for t in batch) for batch in pipeline] for _ in range(2)]
    assert [b[0].shape[0] for b in passes[0]] == [4, 4, 4, 3]
    for first, second in zip(*passes, strict=True):
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
    mels = [b[0] for b in passes[0]]
    assert not np.allclose(mels[0], mels[1]) and not np.allclose(mels[1], mels[2])
    for index, (mel, labels) in enumerate(passes[0][:3]):
        expected = run(x, y, [42, index], AugmentConfig())
        np.testing.assert_array_equal(mel, expected[0])
        np.testing.assert_array_equal(labels, expected[1])


def test_graph_mode_matches_eager():
    x, y = windows(8), multi_hot(8)
    traced = tf.function(lambda mel, labels, seed: augment_batch(mel, labels, seed, AugmentConfig()))
    graph = [t.numpy() for t in traced(x, y, tf.constant([5, 6], tf.int64))]
    for a, b in zip(graph, run(x, y, [5, 6], AugmentConfig())):
        np.testing.assert_array_equal(a, b)


# (6) brightness / contrast -----------------------------------------------------------------------------------


def test_brightness_contrast_is_a_clipped_affine_map_per_window():
    x = windows(256, frames=16, mels=12)
    out, out_labels = run(x, multi_hot(256), [8, 8], BRIGHTNESS_ONLY)
    np.testing.assert_array_equal(out_labels, multi_hot(256))
    contrasts, brightnesses = [], []
    for window, result in zip(x.astype(np.float64), out.astype(np.float64)):
        free = (result > 0) & (result < 1)
        slope, offset = np.polyfit(window[free], result[free], 1)
        affine = slope * window + offset
        assert np.abs(affine[free] - result[free]).max() < 1e-6
        assert np.all(affine[result == 0] <= 1e-6) and np.all(affine[result == 1] >= 1 - 1e-6)
        contrasts.append(slope)
        brightnesses.append(offset - (1 - slope) * window.mean())
    contrasts, brightnesses = np.array(contrasts), np.array(brightnesses)
    assert contrasts.min() >= 0.8 - 1e-5 and contrasts.max() <= 1.2 + 1e-5
    assert brightnesses.min() >= -0.1 - 1e-5 and brightnesses.max() <= 0.1 + 1e-5
    assert contrasts.min() < 0.82 and contrasts.max() > 1.18, "c must span U(0.8, 1.2)"
    assert brightnesses.min() < -0.09 and brightnesses.max() > 0.09, "b must span U(-0.1, 0.1)"
    assert abs(np.corrcoef(contrasts, brightnesses)[0, 1]) < 0.2, "b and c are drawn independently"
