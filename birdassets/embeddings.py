"""Embeddings: one batched encoder pass over every window of a mel dataset, stored as arrays on disk.

On disk (``embeddings/<task>/<checkpoint>/``): ``embeddings.npy`` ``[windows, dim]`` float32,
``labels.npy`` ``[windows, classes]`` uint8 and ``index.parquet`` (``window_id, recording_id, split``),
all in window-index order (train windows first, then test). Written to a staging folder and renamed, so a
crashed run never leaves arrays that look whole.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.atomic import atomic_dir
from birdassets.audio.io import load
from birdassets.datasets.mel_tfds import MelDataset
from birdassets.frontends.windowing import cut_windows
from birdassets.models.base import Encoder, WaveformSpec
from birdassets.sources.manifest import multi_hot

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

    Mel encoders read the dataset's stage-C windows; waveform encoders (:class:`WaveformSpec`, e.g. BirdNET)
    read the same windows' audio (:func:`compute_waveform_embeddings`), so both give one row per window of
    the task, in window-index order, and go through the same folds and probes.

    Returns the :class:`EmbeddingSet` and timing stats (``windows``, ``seconds``, ``windows_per_s``,
    ``audio_s_per_s``).
    """
    if isinstance(encoder.input_spec, WaveformSpec):
        return compute_waveform_embeddings(encoder, dataset)
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


def sub_window_offsets(clip_s: float, encoder_clip_s: float) -> np.ndarray:
    """Start offsets (s) of the encoder windows that cover one task window.

    A task window no longer than the encoder's input is one (zero-padded) encoder window; a longer one is
    covered by ``ceil(clip_s / encoder_clip_s)`` evenly spaced encoder windows from its start to its end (a 5 s
    window and BirdNET's 3 s input: offsets 0 and 2 s, as BirdSet evaluates BirdNET), whose embeddings are
    averaged.
    """
    count = max(1, int(np.ceil(clip_s / encoder_clip_s - 1e-9)))
    if count == 1:
        return np.zeros(1)
    return np.linspace(0.0, clip_s - encoder_clip_s, count)


def compute_waveform_embeddings(encoder: Encoder, dataset: MelDataset, files_per_chunk: int = 32) -> tuple[EmbeddingSet, dict]:
    """Embed the audio of every window of ``dataset`` with a waveform encoder (:class:`WaveformSpec`).

    Each recording segment is decoded once at the encoder's rate; the encoder windows covering each task
    window (:func:`sub_window_offsets`) are embedded in batches and averaged per task window. Audio past a
    segment's end is zero, as in the mel windows.
    """
    spec: WaveformSpec = encoder.input_spec
    windows = dataset.windows()
    classes = tuple(dataset.classes())
    clip_s = float((windows["end_s"] - windows["start_s"]).iloc[0]) if len(windows) else spec.clip_s
    offsets = sub_window_offsets(clip_s, spec.clip_s)  # [k]
    labels = multi_hot(windows["labels"], classes)  # [windows, classes]
    groups = list(windows.groupby(["path", "recording_id"], sort=False).indices.values())
    parts, audio_seconds = [], 0.0
    started = time.perf_counter()
    for first in range(0, len(groups), files_per_chunk):
        chunk, rows = [], []
        for positions in groups[first : first + files_per_chunk]:
            group = windows.iloc[positions]
            seg_start, seg_end = float(group["start_s"].min()), float(group["segment_end_s"].iloc[0])
            audio, _ = load(group["path"].iloc[0], spec.sample_rate, start_s=seg_start, end_s=seg_end)
            audio_seconds += len(audio) / spec.sample_rate
            starts = (group["start_s"].to_numpy()[:, None] - seg_start + offsets[None, :]).ravel()
            chunk.append(cut_windows(audio, starts, spec))  # [windows * k, clip_samples]
            rows.append(positions)
        embedded = np.asarray(encoder.embed(np.concatenate(chunk)), dtype=np.float32)
        parts.append((np.concatenate(rows), embedded.reshape(-1, len(offsets), embedded.shape[-1]).mean(axis=1)))
    seconds = time.perf_counter() - started
    order = np.concatenate([rows for rows, _ in parts])
    matrix = np.empty((len(windows), parts[0][1].shape[1]), np.float32)
    matrix[order] = np.concatenate([values for _, values in parts])
    embedded_set = EmbeddingSet(
        embeddings=matrix,
        labels=labels,
        index=windows[["window_id", "recording_id", "split"]].reset_index(drop=True),
        classes=classes,
    )
    encoder_windows = len(windows) * len(offsets)
    stats = {
        "windows": len(windows),
        "dim": int(matrix.shape[1]),
        "seconds": seconds,
        "windows_per_s": len(windows) / seconds if seconds else None,
        "audio_s_per_s": len(windows) * clip_s / seconds if seconds else None,
        "encoder_windows": encoder_windows,
        "encoder_audio_s_per_s": encoder_windows * spec.clip_s / seconds if seconds else None,
        "decoded_audio_seconds": audio_seconds,
        "sub_window_offsets_s": offsets.tolist(),
    }
    return embedded_set, stats


def write_embeddings(embedded: EmbeddingSet, directory: str | Path, stats: dict | None = None) -> Path:
    """Publish the arrays, index and stats as one folder (replacing an existing one), atomically."""
    with atomic_dir(directory) as staging:
        np.save(staging / EMBEDDINGS, embedded.embeddings)
        np.save(staging / LABELS, embedded.labels)
        embedded.index.to_parquet(staging / INDEX, index=False)
        (staging / STATS).write_text(json.dumps({**(stats or {}), "classes": list(embedded.classes)}, indent=2))
    return Path(directory)


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
