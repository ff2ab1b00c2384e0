"""tf.data pipelines of one cross-validation fold, from a task's TFDS mel dataset: streamed, or from memory.

Two sources, the same pipelines:

- **in memory** (:class:`SplitArrays`): a task whose train and test windows take at most :data:`IN_MEMORY_BYTES`
  is read once, and every fold slices the arrays (5 folds x epochs would otherwise re-read and re-decode the
  files each pass; the demo tasks: 378 windows, 95 MiB).
- **streamed**: every pipeline reads the TFDS split and keeps the windows it wants with a boolean mask looked up
  by the example's row in the split (its ``window_id`` through a hash table, so the files may be read in any
  order). Only the window index (one row of metadata per window) is read with pandas.

- training: the fold's training windows, shuffled (seeded, reshuffled each epoch; streamed: files shuffled too and
  a buffer of :data:`SHUFFLE_WINDOWS`), ``repeat(epochs)``, ``batch(drop_remainder=True)``, the training
  augmentations (:func:`birdassets.supervised.augment.augmented`), prefetch. Yields ``(mel [batch, frames, mels]
  float32, labels [batch, classes] float32)``.
- validation / test: no augmentation, example order, and the windows padded to whole batches of ``batch_size``
  (zeros) so the compiled predict function sees one shape: streamed, a pipeline of ``mel [batch_size, frames,
  mels]`` batches; in memory, one array ``[batches * batch_size, frames, mels]``. The caller keeps the first
  ``rows`` predictions.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_datasets as tfds

from birdassets.datasets.mel_tfds import MelDataset
from birdassets.sources.manifest import multi_hot
from birdassets.supervised.config import AugmentConfig

IN_MEMORY_BYTES = 512 * 2**20
"""Train and test windows up to this many bytes of float32 mel are held in memory (:class:`SplitArrays`)."""
SHUFFLE_WINDOWS = 2048
"""Shuffle buffer of the training pipeline, windows (2048 BirdCLEF windows of 256 x 256 float32 = 512 MiB)."""


class SupervisedDataError(ValueError):
    """The data cannot be trained on as asked (fold table out of step, a fold too small for one batch)."""


@dataclass(frozen=True)
class SplitWindows:
    """One split of a mel dataset: its window index rows (example order) and multi-hot labels.

    Attributes:
        split: ``"train"`` or ``"test"``.
        windows: the window index rows of the split, ``reset_index`` so row ``i`` is example ``i``.
        labels: ``[windows, classes]`` float32 0/1, in the dataset's class order.
    """

    split: str
    windows: pd.DataFrame
    labels: np.ndarray

    @classmethod
    def read(cls, dataset: MelDataset, split: str, classes: list[str] | None = None) -> SplitWindows:
        windows = dataset.windows()
        rows = windows[windows["split"] == split].reset_index(drop=True)
        labels = multi_hot(rows["labels"], classes if classes is not None else dataset.classes())
        return cls(split, rows, labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.windows)


@dataclass(frozen=True)
class SplitArrays:
    """A task's train and test windows in memory, window-index order.

    Attributes:
        train_mel: ``[train windows, frames, mels]`` float32; ``train_labels``: ``[train windows, classes]`` float32.
        test_mel: ``[test windows, frames, mels]`` float32 (no rows when the dataset has no test split).
    """

    train_mel: np.ndarray
    train_labels: np.ndarray
    test_mel: np.ndarray

    @classmethod
    def read_if_small(cls, dataset: MelDataset, max_bytes: int | None = None) -> SplitArrays | None:
        """Both splits read once, or None when their windows take more than ``max_bytes`` (default:
        :data:`IN_MEMORY_BYTES`)."""
        windows = dataset.windows()
        frames, mels = dataset.builder().info.features["mel"].shape
        limit = IN_MEMORY_BYTES if max_bytes is None else max_bytes
        if len(windows) * frames * mels * np.dtype(np.float32).itemsize > limit:
            return None
        train_mel, train_labels = dataset.arrays("train")
        has_test = bool((windows["split"] == "test").any())
        test_mel = dataset.arrays("test")[0] if has_test else np.zeros((0, frames, mels), np.float32)
        return cls(train_mel, train_labels, test_mel)


@dataclass(frozen=True)
class FoldData:
    """The pipelines of one fold (module docstring for what each yields).

    Attributes:
        fold: the validation fold.
        train: augmented training batches, ``epochs * steps_per_epoch`` of them at least.
        valid: the fold's validation windows (rows ``valid_rows`` of the train split), padded batches (streamed)
            or a padded array (in memory).
        test: the test split, likewise (None when the dataset has no test split, or ``with_test=False``).
        train_rows / valid_rows: rows of the train split each pipeline reads, ascending.
        steps_per_epoch: ``len(train_rows) // batch_size`` (the last partial batch of an epoch rolls over).
        batch_size: windows per batch.
    """

    fold: int
    train: tf.data.Dataset
    valid: tf.data.Dataset | np.ndarray
    test: tf.data.Dataset | np.ndarray | None
    train_rows: np.ndarray
    valid_rows: np.ndarray
    steps_per_epoch: int
    batch_size: int


def select_training_rows(n_train: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Rows of the train split to use, ascending: all of them, or ``max_samples`` drawn without replacement
    with ``seed`` (the debug cap). Returns int64 ``[min(n_train, max_samples)]``."""
    if max_samples is None or max_samples >= n_train:
        return np.arange(n_train, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(n_train, size=max_samples, replace=False)
    return np.sort(chosen).astype(np.int64)


def fold_datasets(dataset: MelDataset, train_rows: np.ndarray, fold_of: np.ndarray, fold: int, batch_size: int,
                  augment: AugmentConfig, seed: int, epochs: int, *, with_test: bool = True,
                  in_memory: SplitArrays | None = None) -> FoldData:
    """The training, validation and test pipelines of ``fold``.

    Args:
        dataset: the task's mel dataset.
        train_rows: rows of the train split in use (all, or the debug cap), indices in example order.
        fold_of: ``[train windows]`` validation fold of every window of the train split (example order).
        fold: the validation fold; the other folds' rows of ``train_rows`` are trained on.
        batch_size: windows per batch.
        augment: training augmentations (validation and test never get any).
        seed: file order, shuffle buffer and augmentations derive from it (and from ``fold``).
        epochs: passes over the training rows.
        with_test: build the test pipeline (the same for every fold: callers looping over folds build it once
            with :func:`held_out_windows`).
        in_memory: the dataset's windows read once (:meth:`SplitArrays.read_if_small`); None streams them.

    Raises:
        SupervisedDataError: ``fold_of`` does not match the train split, or the fold has no validation
            window or fewer training windows than one batch.
    """
    train_split = split_keys(dataset, "train")
    require_fold_table(dataset, fold_of, len(train_split))
    train_mask, valid_mask = fold_masks(dataset, train_rows, fold_of, fold, batch_size)
    steps = int(train_mask.sum()) // batch_size
    fold_seed = seed * 1000 + fold
    if in_memory is None:
        train = training_pipeline(dataset, train_split, train_mask, batch_size, augment, fold_seed, epochs)
        valid = prediction_pipeline(dataset, "train", valid_mask, batch_size)
    else:
        train = array_training_pipeline(in_memory.train_mel[train_mask], in_memory.train_labels[train_mask],
                                        batch_size, augment, fold_seed, epochs)
        valid = padded_windows(in_memory.train_mel[valid_mask], batch_size)
    test = held_out_windows(dataset, batch_size, in_memory) if with_test else None
    return FoldData(fold, train, valid, test, np.flatnonzero(train_mask), np.flatnonzero(valid_mask), steps,
                    batch_size)


def require_fold_table(dataset: MelDataset, fold_of: np.ndarray, n_train: int) -> None:
    """Raise :class:`SupervisedDataError` unless ``fold_of`` has one fold per window of the train split."""
    if len(fold_of) != n_train:
        raise SupervisedDataError(f"{dataset.root}: the folds cover {len(fold_of)} training windows but the mel "
                                  f"dataset has {n_train}; rebuild the folds")


def fold_masks(dataset: MelDataset, train_rows: np.ndarray, fold_of: np.ndarray, fold: int,
               batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, valid)`` boolean masks over the train split: the rows in use outside / inside ``fold``.

    Raises:
        SupervisedDataError: fewer training windows than one batch, or no validation window.
    """
    in_use = np.zeros(len(fold_of), dtype=bool)
    in_use[train_rows] = True
    train_mask, valid_mask = in_use & (fold_of != fold), in_use & (fold_of == fold)
    if train_mask.sum() < batch_size or not valid_mask.any():
        raise SupervisedDataError(f"{dataset.root}: fold {fold} has {int(train_mask.sum())} training and "
                                  f"{int(valid_mask.sum())} validation windows; it needs >= {batch_size} "
                                  "(one batch) and >= 1")
    return train_mask, valid_mask


def split_keys(dataset: MelDataset, split: str) -> np.ndarray:
    """``window_id`` of every example of ``split``, example order (empty when the split does not exist)."""
    windows = dataset.windows()
    return windows.loc[windows["split"] == split, "window_id"].to_numpy(dtype=str)


def training_pipeline(dataset: MelDataset, keys: np.ndarray, mask: np.ndarray, batch_size: int,
                      augment: AugmentConfig, seed: int, epochs: int) -> tf.data.Dataset:
    """Shuffled, repeated, batched and augmented ``(mel, labels)`` of the rows where ``mask`` is true."""
    read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=True,
                                  enable_ordering_guard=False)  # rows are found by window id, not position
    with _quiet_absl():  # TFDS warns that the files of an ordered dataset will be read out of order: intended
        examples = dataset.builder().as_dataset(split="train", shuffle_files=True, read_config=read_config)
    ds = _masked(examples, keys, mask).map(_mel_and_labels, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.shuffle(min(SHUFFLE_WINDOWS, int(mask.sum())), seed=seed, reshuffle_each_iteration=True)
    return batched_for_training(ds, batch_size, augment, seed, epochs)


def array_training_pipeline(mel: np.ndarray, labels: np.ndarray, batch_size: int, augment: AugmentConfig,
                            seed: int, epochs: int) -> tf.data.Dataset:
    """:func:`training_pipeline` of windows in memory (``mel [n, frames, mels]``, ``labels [n, classes]``): all
    ``n`` shuffled each epoch."""
    ds = tf.data.Dataset.from_tensor_slices((mel, labels))
    return batched_for_training(ds.shuffle(len(mel), seed=seed, reshuffle_each_iteration=True), batch_size,
                                augment, seed, epochs)


def batched_for_training(ds: tf.data.Dataset, batch_size: int, augment: AugmentConfig, seed: int,
                         epochs: int) -> tf.data.Dataset:
    """Shuffled ``(mel, labels)`` -> ``epochs`` passes in whole batches, augmented, prefetched."""
    from birdassets.supervised.augment import augmented

    ds = ds.repeat(epochs).batch(batch_size, drop_remainder=True)
    return augmented(ds, augment, seed).prefetch(tf.data.AUTOTUNE)


def prediction_pipeline(dataset: MelDataset, split: str, mask: np.ndarray | None, batch_size: int) -> tf.data.Dataset:
    """``mel [batch_size, frames, mels]`` of the rows of ``split`` where ``mask`` is true (all when None), in
    example order; the last batch is zero-padded to ``batch_size`` windows."""
    examples = dataset.builder().as_dataset(split=split, shuffle_files=False)
    keys = split_keys(dataset, split)
    mask = np.ones(len(keys), dtype=bool) if mask is None else mask
    mel = _masked(examples, keys, mask).map(lambda example: tf.cast(example["mel"], tf.float32),
                                            num_parallel_calls=tf.data.AUTOTUNE)
    batches = mel.batch(batch_size).map(lambda batch: _padded(batch, batch_size))
    n_batches = -(-int(mask.sum()) // batch_size)  # known length: Keras stops without an "ran out of data" warning
    return batches.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(tf.data.AUTOTUNE)


def padded_windows(mel: np.ndarray, batch_size: int) -> np.ndarray:
    """``mel [n, frames, mels]`` followed by zero windows up to a whole number of batches."""
    missing = -len(mel) % batch_size
    return np.concatenate([mel, np.zeros((missing, *mel.shape[1:]), mel.dtype)]) if missing else mel


def held_out_windows(dataset: MelDataset, batch_size: int,
                     in_memory: SplitArrays | None = None) -> tf.data.Dataset | np.ndarray | None:
    """The whole test split for prediction (:func:`prediction_pipeline`, or :func:`padded_windows` of the array
    in memory), or None when the dataset has no test windows."""
    if len(split_keys(dataset, "test")) == 0:
        return None
    if in_memory is not None:
        return padded_windows(in_memory.test_mel, batch_size)
    return prediction_pipeline(dataset, "test", None, batch_size)


def _masked(examples: tf.data.Dataset, keys: np.ndarray, mask: np.ndarray) -> tf.data.Dataset:
    """The examples whose row (their ``window_id``'s position in ``keys``) is true in ``mask``."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string), tf.range(len(keys), dtype=tf.int64)),
        default_value=-1,
    )
    keep = tf.constant(mask, tf.bool)

    def wanted(example: dict) -> tf.Tensor:
        row = table.lookup(example["window_id"])
        return tf.logical_and(row >= 0, tf.gather(keep, tf.maximum(row, 0)))

    return examples.filter(wanted)


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """absl (TFDS's logger) at ERROR level inside the block."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _mel_and_labels(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(example["mel"], tf.float32), tf.cast(example["labels"], tf.float32)


def _padded(batch: tf.Tensor, batch_size: int) -> tf.Tensor:
    missing = batch_size - tf.shape(batch)[0]
    padded = tf.pad(batch, [[0, missing], [0, 0], [0, 0]])
    return tf.ensure_shape(padded, [batch_size, *batch.shape[1:]])
