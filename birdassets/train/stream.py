"""Training batches from the tf.data mel dataset: a deterministic, resumable stream.

The stream for a seed is fixed: shuffle (seeded, reshuffled every epoch), repeat, batch with
``drop_remainder``. Resuming at step ``s`` skips the first ``s`` batches, so a resumed run sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from birdassets.datasets.mel_tfds import MelDataset


def training_stream(
    dataset: MelDataset, keep: np.ndarray, batch_size: int, seed: int, start_step: int = 0, shuffle_buffer: int = 2048
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches ``{"mel": [batch, frames, mels] float32, "labels": [batch, classes] float32}``.

    Args:
        dataset: the task's mel dataset (``train`` split).
        keep: bool ``[train_windows]`` in window-index order: which windows the trainer may use.
        start_step: number of batches already consumed (resume).
    """
    if int(keep.sum()) < batch_size:
        raise ValueError(f"{dataset.root}: only {int(keep.sum())} training windows for batch size {batch_size}")
    mask = tf.constant(keep)
    ds = (
        dataset.as_dataset("train")
        .enumerate()
        .filter(lambda i, example: tf.gather(mask, i))
        .map(lambda i, example: {"mel": example["mel"], "labels": tf.cast(example["labels"], tf.float32)})
        .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .skip(start_step)
        .prefetch(tf.data.AUTOTUNE)
    )
    return ds.as_numpy_iterator()
