"""Mel-window datasets: a manifest cut into windows (stage A), turned into mel spectrograms (stages B, C)
and written once as a sharded TensorFlow Datasets dataset, plus a window index.

Anyone can read the result without birdassets::

    builder = tfds.builder_from_directory(path)           # path = MelDataset.builder_dir
    ds = builder.as_dataset(split="train")                # {"mel": [frames, mels], "labels": [classes], ...}

Examples keep generation order (``disable_shuffling``), which is also the row order of
``window_index.parquet``: one row per window with ``window_id, recording_id, split, start_s, end_s, labels``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_datasets as tfds

from birdassets.atomic import atomic_dir
from birdassets.audio.io import load
from birdassets.frontends.presets import MelPreset
from birdassets.frontends.tf_mel import TFMelFrontend
from birdassets.frontends.windowing import cut_windows, window_starts
from birdassets.models.base import InputSpec
from birdassets.sources.manifest import Manifest

WINDOW_INDEX = "window_index.parquet"
BUILD_STATS = "build_stats.json"
_BATCH_WINDOWS = 64
RAW_BYTES = tfds.features.Encoding.BYTES
"""How ``mel`` and ``labels`` are stored: a float list is serialised one value at a time, bytes at once."""
WINDOWS_PER_SHARD = 128


def window_index(manifest: Manifest, preset: MelPreset) -> pd.DataFrame:
    """Stage A over a manifest: one row per window, train split first, then test.

    Columns: ``window_id`` (``"<recording_id>/<k>"``), ``recording_id``, ``split``, ``path``,
    ``start_s``/``end_s`` (absolute times in the file, s; ``end_s - start_s == clip_s``, audio past the
    segment's end is zero-padded), ``segment_end_s`` (s), ``labels`` (list[str], the recording's labels).
    """
    rows = []
    for split in ("train", "test"):
        for record in manifest.split(split).itertuples(index=False):
            offset = 0.0 if np.isnan(record.start_s) else float(record.start_s)
            stop = record.duration_s if np.isnan(record.end_s) else float(record.end_s)
            for k, start in enumerate(window_starts(stop - offset, preset)):
                rows.append(
                    {
                        "window_id": f"{record.recording_id}/{k}",
                        "recording_id": record.recording_id,
                        "split": split,
                        "path": record.path,
                        "start_s": offset + start,
                        "end_s": offset + start + preset.clip_s,
                        "segment_end_s": stop,
                        "labels": list(record.labels),
                    }
                )
    return pd.DataFrame(
        rows, columns=["window_id", "recording_id", "split", "path", "start_s", "end_s", "segment_end_s", "labels"]
    )


def dataset_fingerprint(manifest_hash: str, preset: MelPreset) -> str:
    """Identity of a mel dataset: the manifest's content, the preset's parameters and the storage format
    (:attr:`MelWindows.VERSION`)."""
    return hashlib.sha256(f"{manifest_hash}:{preset.content_hash()}:{MelWindows.VERSION}".encode()).hexdigest()


class MelWindows(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over a birdassets manifest: one example per stage-A window.

    Features: ``mel`` ``preset.input_shape`` ``[frames, mels]`` float32 (stage C), ``labels`` ``[classes]`` uint8 multi-hot,
    ``window_id``, ``recording_id`` (text), ``start_s`` (float32, seconds into the file).
    """

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Mel windows of a birdassets manifest.",
        "1.1.0": "Window index keeps each window's file and segment end (waveform encoders re-read the audio).",
        "1.2.0": "mel and labels stored as raw bytes (a 256 x 128 window serialises in 0.08 ms, as a float list 5 ms).",
    }

    def __init__(self, *, manifest: Manifest, preset: MelPreset, windows: pd.DataFrame, **kwargs):
        self._manifest = manifest
        self._preset = preset
        self._windows = windows
        self._frontend = TFMelFrontend(preset)
        self._frontend.model_input(np.zeros((1, preset.clip_samples), np.float32))  # trace once, outside timing
        self.audio_seconds = 0.0
        self.mel_seconds = 0.0
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        preset = self._preset
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "mel": tfds.features.Tensor(shape=preset.input_shape, dtype=np.float32, encoding=RAW_BYTES),
                    "labels": tfds.features.Tensor(shape=(len(self._manifest.classes),), dtype=np.uint8,
                                                   encoding=RAW_BYTES),
                    "window_id": tfds.features.Text(),
                    "recording_id": tfds.features.Text(),
                    "start_s": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            metadata=tfds.core.MetadataDict(
                classes=list(self._manifest.classes),
                preset=preset.to_dict(),
                preset_hash=preset.content_hash(),
                manifest_hash=self._manifest.content_hash(),
            ),
            description="Mel-spectrogram windows written by birdassets.",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):  # noqa: ARG002 - TFDS signature
        return {
            split: self._generate_examples(split)
            for split in ("train", "test")
            if (self._windows["split"] == split).any()
        }

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
        windows = self._windows[self._windows["split"] == split]
        label_index = {name: i for i, name in enumerate(self._manifest.classes)}
        pending: list[tuple[pd.Series, np.ndarray]] = []
        for _, group in windows.groupby(["path", "recording_id"], sort=False):
            for row, wave in zip(group.itertuples(index=False), self._cut(group), strict=True):
                pending.append((row, wave))
            if len(pending) >= _BATCH_WINDOWS:
                yield from self._emit(pending, label_index)
                pending = []
        if pending:
            yield from self._emit(pending, label_index)

    def _cut(self, group: pd.DataFrame) -> np.ndarray:
        """Load a recording's segment once and cut its windows (stage A), ``[windows, clip_samples]``."""
        preset = self._preset
        first = group.iloc[0]
        seg_start, seg_end = float(group["start_s"].min()), float(first["segment_end_s"])
        audio, _ = load(first["path"], preset.sample_rate, start_s=seg_start, end_s=seg_end)
        self.audio_seconds += len(audio) / preset.sample_rate
        return cut_windows(audio, group["start_s"].to_numpy() - seg_start, preset)

    def _emit(self, pending, label_index) -> Iterator[tuple[str, dict]]:
        started = time.perf_counter()
        mel = self._frontend.model_input(np.stack([wave for _, wave in pending])).numpy()
        self.mel_seconds += time.perf_counter() - started
        for (row, _), spectrogram in zip(pending, mel, strict=True):
            labels = np.zeros(len(label_index), dtype=np.uint8)
            labels[[label_index[name] for name in row.labels]] = 1
            yield row.window_id, {
                "mel": spectrogram,
                "labels": labels,
                "window_id": row.window_id,
                "recording_id": row.recording_id,
                "start_s": np.float32(row.start_s),
            }


@dataclass(frozen=True)
class MelDataset:
    """A written mel dataset on disk.

    Attributes:
        root: ``mel/<task>/<preset>-<fingerprint[:12]>``.
        builder_dir: the TFDS directory to pass to ``tfds.builder_from_directory``.
        window_index_path: parquet window index in example order.
    """

    root: Path

    @property
    def builder_dir(self) -> Path:
        return self.root / "mel_windows" / str(MelWindows.VERSION)

    @property
    def window_index_path(self) -> Path:
        return self.root / WINDOW_INDEX

    @property
    def stats_path(self) -> Path:
        return self.root / BUILD_STATS

    def exists(self) -> bool:
        return self.stats_path.exists() and (self.builder_dir / "dataset_info.json").exists()

    def windows(self) -> pd.DataFrame:
        return pd.read_parquet(self.window_index_path)

    def stats(self) -> dict:
        return json.loads(self.stats_path.read_text())

    def builder(self) -> tfds.core.DatasetBuilder:
        return tfds.builder_from_directory(str(self.builder_dir))

    def classes(self) -> list[str]:
        return list(self.builder().info.metadata["classes"])

    def input_spec(self) -> InputSpec:
        """What an encoder of these windows takes: the preset's name, rate and clip length, and the stored
        window shape ``[frames, mels]`` (the preset's model input, e.g. 256 × 256 for ``birdclef2025``)."""
        info = self.builder().info
        frames, mels = info.features["mel"].shape
        preset = info.metadata["preset"]
        return InputSpec(preset=preset["name"], sample_rate=preset["sample_rate"], clip_s=preset["clip_s"],
                         frames=frames, mels=mels)

    def as_dataset(self, split: str, batch_size: int | None = None) -> tf.data.Dataset:
        """The split as a ``tf.data.Dataset`` in window-index order (optionally batched, prefetched)."""
        ds = self.builder().as_dataset(split=split, shuffle_files=False)
        if batch_size is not None:
            ds = ds.batch(batch_size)
        return ds.prefetch(tf.data.AUTOTUNE)

    def arrays(self, split: str, select: np.ndarray | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The split's windows in memory, window-index order: ``(mel [n, frames, mels] float32, labels
        [n, classes] float32)``; with ``select`` (bool ``[windows of the split]``) only the selected rows."""
        mels, labels, offset = [], [], 0
        for batch in self.as_dataset(split, batch_size=batch_size).as_numpy_iterator():
            take = slice(None) if select is None else select[offset: offset + len(batch["mel"])]
            mels.append(batch["mel"][take])
            labels.append(batch["labels"][take].astype(np.float32))
            offset += len(batch["mel"])
        return np.concatenate(mels), np.concatenate(labels)


def shards_for(windows: int, windows_per_shard: int = WINDOWS_PER_SHARD) -> int:
    """Shard count for a split of ``windows`` examples (about 20 MB of float32 mel per shard)."""
    return max(1, min(64, windows // windows_per_shard))


def dataset_dir(mel_root: Path, manifest: Manifest, preset: MelPreset) -> Path:
    """Where the dataset for this manifest and preset lives under ``mel_root`` (``mel/<task>``)."""
    return Path(mel_root) / f"{preset.name}-{dataset_fingerprint(manifest.content_hash(), preset)[:12]}"


def build_mel_dataset(
    manifest: Manifest, preset: MelPreset, mel_root: str | Path, *, windows_per_shard: int = WINDOWS_PER_SHARD
) -> MelDataset:
    """Write the TFDS mel dataset and window index for ``manifest`` (idempotent).

    The dataset is built in a staging folder and published whole (:func:`birdassets.atomic.atomic_dir`), so a
    crashed build is never read as whole; an existing complete dataset is returned as is, and one a concurrent
    build finished first is kept (the folder is content-addressed: both hold the same windows).
    """
    target = MelDataset(dataset_dir(Path(mel_root), manifest, preset))
    if target.exists():
        return target
    with atomic_dir(target.root, replace=False) as staging:
        windows = window_index(manifest, preset)
        stats = _write_tfds(staging, manifest, preset, windows, windows_per_shard)
        windows.to_parquet(staging / WINDOW_INDEX, index=False)  # with path and segment end: waveform encoders re-read the audio
        (staging / BUILD_STATS).write_text(json.dumps(stats, indent=2))
    return target


def _write_tfds(staging: Path, manifest: Manifest, preset: MelPreset, windows: pd.DataFrame,
                windows_per_shard: int) -> dict:
    """Prepare the TFDS dataset under ``staging``; returns its build stats (counts, seconds, audio s per s)."""
    tfds.disable_progress_bar()
    num_shards = shards_for(int(windows["split"].value_counts().min()), windows_per_shard)
    started = time.perf_counter()
    builder = MelWindows(manifest=manifest, preset=preset, windows=windows, data_dir=str(staging))
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading and preparing ..." banners
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False, num_shards=num_shards)
        )
    wall = time.perf_counter() - started
    return {
        "windows": int(len(windows)),
        "windows_by_split": {k: int(v) for k, v in windows["split"].value_counts().items()},
        "audio_seconds": builder.audio_seconds,
        "mel_seconds": builder.mel_seconds,
        "wall_seconds": wall,
        "mel_audio_s_per_s": len(windows) * preset.clip_s / builder.mel_seconds if builder.mel_seconds else None,
        "build_audio_s_per_s": builder.audio_seconds / wall if wall else None,
        "shards_per_split": num_shards,
        "preset": preset.name,
        "preset_hash": preset.content_hash(),
        "manifest_hash": manifest.content_hash(),
    }
