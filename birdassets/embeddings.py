"""Embeddings: one batched encoder pass over every window of a mel dataset, stored as arrays on disk.

On disk (``embeddings/<task>/<checkpoint>/``): ``embeddings.npy`` ``[windows, dim]`` float32,
``labels.npy`` ``[windows, classes]`` uint8 and ``index.parquet`` (``window_id, recording_id, split``),
all in window-index order (train windows first, then test). Written to a staging folder and renamed, so a
crashed run never leaves arrays that look whole.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.datasets.mel_tfds import MelDataset
from birdassets.models.base import Encoder

EMBEDDINGS = "embeddings.npy"
LABELS = "labels.npy"
INDEX = "index.parquet"
STATS = "stats.json"


class EmbeddingError(ValueError):
    """Embeddings cannot be computed or read; the message names the path and the problem."""


@dataclass(frozen=True)
class EmbeddingSet:
    """Embeddings of every window of a task.

    Attributes:
        embeddings: ``[windows, dim]`` float32.
        labels: ``[windows, classes]`` uint8 multi-hot.
        index: ``window_id, recording_id, split`` per row.
        classes: label names, one per label column.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    index: pd.DataFrame
    classes: tuple[str, ...]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``(embeddings, labels, index)`` of one split."""
        mask = (self.index["split"] == name).to_numpy()
        return self.embeddings[mask], self.labels[mask], self.index[mask].reset_index(drop=True)


def compute_embeddings(encoder: Encoder, dataset: MelDataset, batch_size: int = 64) -> tuple[EmbeddingSet, dict]:
    """Embed every window of ``dataset`` (train then test) with ``encoder`` in fixed-size batches.

    Returns the :class:`EmbeddingSet` and timing stats (``windows``, ``seconds``, ``windows_per_s``,
    ``audio_s_per_s``).
    """
    windows = dataset.windows()
    spec = encoder.input_spec
    builder = dataset.builder()
    mel_shape = tuple(builder.info.features["mel"].shape)
    if mel_shape != (spec.frames, spec.mels):
        raise EmbeddingError(
            f"{dataset.root}: mel windows are {mel_shape} [frames, mels] but encoder {encoder.name!r} "
            f"expects {(spec.frames, spec.mels)} (preset {spec.preset!r})"
        )
    parts, labels, ids = [], [], []
    started = time.perf_counter()
    for split in ("train", "test"):
        if not (windows["split"] == split).any():
            continue
        for batch in dataset.as_dataset(split, batch_size=batch_size).as_numpy_iterator():
            parts.append(np.asarray(encoder.embed(batch["mel"]), dtype=np.float32))
            labels.append(batch["labels"])
            ids.extend(w.decode() for w in batch["window_id"])
    seconds = time.perf_counter() - started
    if ids != windows["window_id"].tolist():
        raise EmbeddingError(f"{dataset.root}: dataset examples are not in window-index order")
    embedded = EmbeddingSet(
        embeddings=np.concatenate(parts),
        labels=np.concatenate(labels).astype(np.uint8),
        index=windows[["window_id", "recording_id", "split"]].reset_index(drop=True),
        classes=tuple(dataset.classes()),
    )
    clip_s = spec.clip_s
    stats = {
        "windows": len(ids),
        "dim": int(embedded.embeddings.shape[1]),
        "seconds": seconds,
        "windows_per_s": len(ids) / seconds if seconds else None,
        "audio_s_per_s": len(ids) * clip_s / seconds if seconds else None,
        "batch_size": batch_size,
    }
    return embedded, stats


def write_embeddings(embedded: EmbeddingSet, directory: str | Path, stats: dict | None = None) -> Path:
    """Write atomically (staging folder + rename); replaces an existing folder."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".incomplete")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.save(staging / EMBEDDINGS, embedded.embeddings)
    np.save(staging / LABELS, embedded.labels)
    embedded.index.to_parquet(staging / INDEX, index=False)
    (staging / STATS).write_text(json.dumps({**(stats or {}), "classes": list(embedded.classes)}, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return directory


def read_embeddings(directory: str | Path) -> EmbeddingSet:
    """Read what :func:`write_embeddings` wrote (embeddings memory-mapped)."""
    directory = Path(directory)
    if not (directory / STATS).exists():
        raise EmbeddingError(f"{directory}: no complete embeddings here (missing {STATS})")
    stats = json.loads((directory / STATS).read_text())
    return EmbeddingSet(
        embeddings=np.load(directory / EMBEDDINGS, mmap_mode="r"),
        labels=np.load(directory / LABELS),
        index=pd.read_parquet(directory / INDEX),
        classes=tuple(stats["classes"]),
    )


def read_stats(directory: str | Path) -> dict:
    return json.loads((Path(directory) / STATS).read_text())


def collapse_stats(embeddings: np.ndarray) -> dict:
    """Health of an embedding matrix ``[windows, dim]``: finiteness and signs of collapse.

    Returns ``non_finite`` (count), ``mean_std`` (mean over dims of the per-dim std across windows),
    ``mean_cosine`` (mean pairwise cosine similarity between rows, on up to 512 evenly spaced rows) and
    ``effective_rank`` (exp of the entropy of the normalised singular values of the centred sample).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    non_finite = int((~np.isfinite(x)).sum())
    if non_finite or len(x) < 2:
        return {"non_finite": non_finite, "mean_std": 0.0, "mean_cosine": 1.0, "effective_rank": 0.0}
    sample = x[np.linspace(0, len(x) - 1, min(len(x), 512)).astype(int)]
    unit = sample / np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    n = len(unit)
    mean_cosine = float((cosine.sum() - np.trace(cosine)) / (n * (n - 1)))
    singular = np.linalg.svd(sample - sample.mean(axis=0), compute_uv=False)
    p = singular / max(singular.sum(), 1e-12)
    p = p[p > 0]
    return {
        "non_finite": 0,
        "mean_std": float(x.std(axis=0).mean()),
        "mean_cosine": mean_cosine,
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
    }
