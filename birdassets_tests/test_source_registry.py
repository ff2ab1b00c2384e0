"""The source registry: a new source is one reader plus one table entry, and settings and ingestion use it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdassets.settings import DatasetConfig, SettingsError, load_settings
from birdassets.sources.ingest import IngestResult, ingest_rows
from birdassets.sources.registry import SOURCES, Source, ingest_source, min_duration_s, read_source

RATE = 16_000
CONFIG = '[[datasets]]\nname = "tones-1"\nsource = "tones"\nroot = "{root}"\n'


def read_tones(dataset: DatasetConfig, preset) -> IngestResult:
    """A throw-away source: ``root/<label>/<id>.wav``, each file one training recording of ``<label>``."""
    rows = [
        {
            "recording_id": path.stem,
            "path": path.resolve(),
            "primary_label": path.parent.name,
            "labels": [path.parent.name],
            "split": "train",
            "start_s": math.nan,
            "end_s": math.nan,
            "_where": str(path),
        }
        for path in sorted(Path(dataset.root).glob("*/*.wav"))
    ]
    return ingest_rows(rows, None, min_duration_s(preset), "full", lambda row, fact: None)


@pytest.fixture
def tones_source(monkeypatch):
    """Registers the ``tones`` source for one test; the table is restored afterwards."""
    monkeypatch.setitem(SOURCES, "tones", Source("tones", read_tones, "birdset", "labelled tones in folders"))


def _write_tones(root: Path) -> None:
    for label, name, seconds in (("lo", "a", 3.0), ("hi", "b", 2.0), ("hi", "blip", 0.5)):
        t = np.arange(int(seconds * RATE)) / RATE
        (root / label).mkdir(parents=True, exist_ok=True)
        sf.write(root / label / f"{name}.wav", 0.3 * np.sin(2 * np.pi * 1000 * t), RATE, subtype="PCM_16")


def test_a_registered_source_is_configured_and_read_through_the_registry(tmp_path: Path, tones_source) -> None:
    data = tmp_path / "tones"
    _write_tones(data)
    (tmp_path / "birdassets.toml").write_text(CONFIG.format(root=data))
    settings = load_settings(tmp_path)
    dataset = settings.dataset("tones-1")
    assert (dataset.source, dataset.preset) == ("tones", "birdset")  # the entry's default, not birdclef2025

    result = ingest_source(dataset, settings.task_preset("tones-1"))  # birdset: min_last_s = 1.0 s
    assert (result.found, result.ingested) == (3, 2) and result.reconciles
    assert [(Path(r.path).name, r.reason) for r in result.quarantine] == [("blip.wav", "too_short")]
    table = result.manifest.table
    assert list(zip(table["recording_id"], table["primary_label"], table["duration_s"])) == [
        ("a", "lo", 3.0),
        ("b", "hi", 2.0),
    ]
    assert result.manifest.classes == ("hi", "lo")
    without_preset = read_source(dataset).table  # no preset: no minimum duration, the blip is kept
    assert sorted(without_preset["recording_id"]) == ["a", "b", "blip"]


def test_an_unregistered_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "birdassets.toml").write_text(CONFIG.format(root=tmp_path))
    with pytest.raises(SettingsError, match="unknown source 'tones'; expected one of \\('demo', 'birdclef', "):
        load_settings(tmp_path)
    assert "tones" not in SOURCES


def test_a_clips_folder_is_configured_and_read_with_the_orcahello_preset(tmp_path: Path) -> None:
    """Source ``clips``: OrcaHello's preset by default, so its min_last_s (2 s, one whole clip) quarantines a 1-s
    clip; positive/ and negative/ become labelled training rows, anything else under the root is ignored."""
    data = tmp_path / "clips"
    for folder, name, seconds in (("positive", "p1", 2.0), ("positive", "short", 1.0), ("negative", "n1", 2.5),
                                  ("recordings", "long", 3.0)):
        (data / folder).mkdir(parents=True, exist_ok=True)
        sf.write(data / folder / f"{name}.wav", np.zeros(int(seconds * 20_000)), 20_000, subtype="PCM_16")
    (tmp_path / "birdassets.toml").write_text(
        f'include_demo = false\n[[datasets]]\nname = "calls"\nsource = "clips"\nroot = "{data}"\nbenchmark = false\n'
    )
    settings = load_settings(tmp_path)
    dataset = settings.dataset("calls")
    assert dataset.preset == "orcahello" and SOURCES["clips"].labelled
    result = ingest_source(dataset, settings.task_preset("calls"))
    assert (result.found, result.ingested, result.ignored) == (3, 2, 1) and result.reconciles
    assert [(Path(r.path).name, r.reason) for r in result.quarantine] == [("short.wav", "too_short")]
    table = result.manifest.table
    assert result.manifest.classes == ("call",)
    assert list(zip(table["recording_id"], table["primary_label"], table["split"])) == [
        ("negative/n1", "", "train"),
        ("positive/p1", "call", "train"),
    ]
