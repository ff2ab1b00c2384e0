"""The TFDS mel dataset: readable by plain TFDS, in window-index order, sharded, idempotent, atomic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from birdassets.audio.io import AudioError
from birdassets.datasets.mel_tfds import MelDataset, MelWindows, build_mel_dataset, dataset_dir, window_index
from birdassets.frontends.presets import get_preset
from birdassets.frontends.tf_mel import TFMelFrontend
from birdassets.audio.io import load
from birdassets.sources.manifest import Manifest

PRESET = get_preset("birdclef2025")


def test_window_index_cuts_recordings_and_segments(small_manifest):
    windows = window_index(small_manifest, PRESET)
    # r0 12.3 s -> 3 windows, r1 3 s -> 1, r2 7 s -> 2, r3 6 s -> 2 (1 s remainder kept), 2 test segments
    assert windows.groupby("recording_id").size().to_dict() == {"r0": 3, "r1": 1, "r2": 2, "r3": 2, "scape@0.0": 1, "scape@5.0": 1}
    assert windows["split"].tolist()[:8] == ["train"] * 8 and windows["split"].tolist()[8:] == ["test"] * 2
    seg = windows[windows["recording_id"] == "scape@5.0"].iloc[0]
    assert (seg["start_s"], seg["end_s"]) == (5.0, 10.0)


def test_dataset_reads_back_with_plain_tfds(tmp_path, small_manifest):
    dataset = build_mel_dataset(small_manifest, PRESET, tmp_path / "mel", windows_per_shard=1)
    builder = tfds.builder_from_directory(str(dataset.builder_dir))
    assert builder.info.splits["train"].num_examples == 8
    assert builder.info.splits["test"].num_examples == 2
    assert builder.info.splits["train"].num_shards > 1  # sharded on disk
    assert list(builder.info.metadata["classes"]) == ["hi", "lo"]
    assert builder.info.metadata["preset_hash"] == PRESET.content_hash()

    examples = list(builder.as_dataset(split="train", shuffle_files=False).as_numpy_iterator())
    index = dataset.windows()
    assert [e["window_id"].decode() for e in examples] == index[index["split"] == "train"]["window_id"].tolist()
    first = examples[0]
    assert first["mel"].shape == PRESET.input_shape == (256, 256) and first["mel"].dtype == np.float32
    assert first["labels"].tolist() == [0, 1]  # r0 is "lo"
    # the stored mel is exactly stage C of the first 5 s of the resampled recording
    r0 = small_manifest.table.set_index("recording_id").loc["r0"]
    audio, _ = load(r0["path"], PRESET.sample_rate)
    expected = TFMelFrontend(PRESET).model_input(audio[None, : PRESET.clip_samples]).numpy()[0]
    np.testing.assert_allclose(first["mel"], expected, atol=1e-6)

    test = list(dataset.as_dataset("test", batch_size=2).as_numpy_iterator())[0]
    assert test["labels"].tolist() == [[0, 1], [1, 1]]
    stats = dataset.stats()
    assert stats["windows"] == 10 and stats["mel_audio_s_per_s"] > 0


def test_build_is_idempotent_and_keyed_by_preset_and_manifest(tmp_path, small_manifest):
    first = build_mel_dataset(small_manifest, PRESET, tmp_path / "mel")
    stamp = first.stats_path.stat().st_mtime_ns
    again = build_mel_dataset(small_manifest, PRESET, tmp_path / "mel")
    assert again.root == first.root and again.stats_path.stat().st_mtime_ns == stamp
    other_preset = dataclasses.replace(PRESET, f_min=0.0)
    assert dataset_dir(tmp_path / "mel", small_manifest, other_preset) != first.root
    fewer = Manifest(small_manifest.table.iloc[1:].reset_index(drop=True), small_manifest.classes)
    assert dataset_dir(tmp_path / "mel", fewer, PRESET) != first.root


def test_a_new_storage_version_is_built_in_a_folder_of_its_own(tmp_path, small_manifest, monkeypatch):
    """Data written as 1.1.0 (float lists) is never read as the current format: the version is in the fingerprint."""
    current = dataset_dir(tmp_path / "mel", small_manifest, PRESET)
    monkeypatch.setattr(MelWindows, "VERSION", tfds.core.Version("1.1.0"))
    assert dataset_dir(tmp_path / "mel", small_manifest, PRESET) != current


def test_crashed_build_is_never_read_as_whole(tmp_path, small_manifest):
    table = small_manifest.table.copy()
    table.loc[3, "path"] = str(tmp_path / "missing.wav")
    broken = Manifest(table, small_manifest.classes)
    with pytest.raises(AudioError, match="missing.wav"):
        build_mel_dataset(broken, PRESET, tmp_path / "mel")
    target = MelDataset(dataset_dir(tmp_path / "mel", broken, PRESET))
    assert not target.exists() and not target.root.exists()
    # the next (fixed) build goes through even with the stale staging folder still there
    assert build_mel_dataset(small_manifest, PRESET, tmp_path / "mel").exists()
