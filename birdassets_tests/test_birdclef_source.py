"""read_birdclef on a tiny BirdCLEF folder with real audio files written by soundfile: table errors raise,
bad audio files are quarantined (with their rows left out) and the counts reconcile."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdassets.sources.birdclef import read_birdclef
from birdassets.sources.ingest import unique_ids
from birdassets.sources.manifest import COLUMNS, Manifest, ManifestError

RATE = 32000


def _tone(seconds: float, hz: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def _write(path: Path, audio: np.ndarray, rate: int = RATE, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, **kwargs)
    return path


@pytest.fixture()
def birdclef_root(tmp_path: Path) -> Path:
    root = tmp_path / "birdclef"
    _write(root / "train_audio/amerob/XC100.ogg", _tone(3.0, 3000), format="OGG", subtype="VORBIS")
    _write(root / "train_audio/amerob/XC101.wav", _tone(2.0, 3100, rate=22050, channels=2), rate=22050)
    _write(root / "train_audio/norcar/XC200.flac", _tone(4.0, 4000), format="FLAC")
    _write(root / "test_soundscapes/sc1.ogg", _tone(15.0, 5000), format="OGG", subtype="VORBIS")
    pd.DataFrame(
        {
            "primary_label": ["amerob", "amerob", "norcar"],
            "secondary_labels": ["['norcar', 'amerob', 'norcar']", "[]", "['blujay']"],
            "type": ["['song']", "['call']", "['song']"],
            "filename": ["amerob/XC100.ogg", "amerob/XC101.wav", "norcar/XC200.flac"],
            "rating": [4.5, 3.0, 5.0],
            "latitude": [1.0, 2.0, 3.0],
            "longitude": [4.0, 5.0, 6.0],
        }
    ).to_csv(root / "train.csv", index=False)
    pd.DataFrame(
        {
            "filename": ["sc1.ogg", "sc1.ogg", "sc1.ogg"],
            "start_s": [0.0, 5.0, 10.0],
            "end_s": [5.0, 10.0, 15.0],
            "labels": ["amerob houspa", "", "norcar"],
        }
    ).to_csv(root / "soundscape_labels.csv", index=False)
    return root


def test_reads_train_and_soundscape_rows(birdclef_root: Path) -> None:
    result = read_birdclef(birdclef_root)
    assert (result.found, result.ingested, result.quarantine) == (4, 4, ())
    assert result.reconciles
    manifest = result.manifest
    table = manifest.table
    assert list(table.columns) == list(COLUMNS)
    assert manifest.classes == ("amerob", "blujay", "houspa", "norcar")

    train = manifest.split("train").set_index("recording_id")
    assert list(train.index) == ["amerob/XC100", "amerob/XC101", "norcar/XC200"]
    assert train.loc["amerob/XC100", "labels"] == ["amerob", "norcar"]  # primary first, dedup, order kept
    assert train.loc["amerob/XC101", "labels"] == ["amerob"]
    assert train.loc["norcar/XC200", "labels"] == ["norcar", "blujay"]
    assert train.loc["amerob/XC101", "sample_rate"] == 22050
    assert train.loc["amerob/XC101", "channels"] == 2
    assert train.loc["amerob/XC101", "duration_s"] == pytest.approx(2.0, abs=1e-3)
    assert train.loc["norcar/XC200", "duration_s"] == pytest.approx(4.0, abs=1e-3)
    assert train["start_s"].isna().all() and train["end_s"].isna().all()
    ogg = birdclef_root / "train_audio/amerob/XC100.ogg"
    assert train.loc["amerob/XC100", "path"] == str(ogg.resolve())
    assert train.loc["amerob/XC100", "sha256"] == hashlib.sha256(ogg.read_bytes()).hexdigest()

    test = manifest.split("test").set_index("recording_id")
    assert list(test.index) == ["sc1@0.0", "sc1@10.0", "sc1@5.0"]  # sorted by id
    assert test.loc["sc1@0.0", "labels"] == ["amerob", "houspa"]
    assert test.loc["sc1@5.0", "labels"] == []
    assert (test["primary_label"] == "").all()
    assert test.loc["sc1@10.0", "start_s"] == 10.0 and test.loc["sc1@10.0", "end_s"] == 15.0
    assert test["duration_s"].iloc[0] == pytest.approx(15.0, abs=1e-3)
    assert test["sha256"].nunique() == 1

    matrix = manifest.label_matrix(manifest.split("test"))
    # rows sorted: sc1@0.0, sc1@10.0, sc1@5.0 ; columns amerob, blujay, houspa, norcar
    np.testing.assert_array_equal(matrix, [[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])


def test_manifest_roundtrips_through_parquet(birdclef_root: Path, tmp_path: Path) -> None:
    manifest = read_birdclef(birdclef_root).manifest
    again = Manifest.read(manifest.write(tmp_path / "m.parquet"))
    assert again.classes == manifest.classes
    assert again.content_hash() == manifest.content_hash()


def test_without_soundscape_table_has_only_train(birdclef_root: Path) -> None:
    (birdclef_root / "soundscape_labels.csv").unlink()
    manifest = read_birdclef(birdclef_root).manifest
    assert set(manifest.table["split"]) == {"train"}
    assert manifest.classes == ("amerob", "blujay", "norcar")


def test_duplicate_filenames_get_unique_ids(birdclef_root: Path) -> None:
    train = pd.read_csv(birdclef_root / "train.csv")
    pd.concat([train, train.iloc[[0]]]).to_csv(birdclef_root / "train.csv", index=False)
    result = read_birdclef(birdclef_root)
    assert result.found == 4  # the file listed twice is one file
    ids = result.manifest.split("train")["recording_id"].tolist()
    assert ids == ["amerob/XC100", "amerob/XC100#2", "amerob/XC101", "norcar/XC200"]
    assert unique_ids(["a", "a", "a#2", "b"]) == ["a", "a#2", "a#2#2", "b"]


def test_missing_train_csv(birdclef_root: Path) -> None:
    (birdclef_root / "train.csv").unlink()
    with pytest.raises(ManifestError, match="train.csv"):
        read_birdclef(birdclef_root)


def test_missing_column_names_file_and_column(birdclef_root: Path) -> None:
    train = pd.read_csv(birdclef_root / "train.csv").drop(columns=["secondary_labels"])
    train.to_csv(birdclef_root / "train.csv", index=False)
    with pytest.raises(ManifestError, match=r"train\.csv.*secondary_labels"):
        read_birdclef(birdclef_root)


def test_missing_audio_file_is_quarantined_with_its_rows(birdclef_root: Path) -> None:
    missing = birdclef_root / "train_audio/norcar/XC200.flac"
    missing.unlink()
    result = read_birdclef(birdclef_root)
    (record,) = result.quarantine
    assert (record.path, record.reason) == (str(missing.resolve()), "missing")
    assert record.size_bytes is None and record.sha256 is None
    assert "does not exist" in record.detail
    assert result.manifest.split("train")["recording_id"].tolist() == ["amerob/XC100", "amerob/XC101"]
    assert (result.found, result.ingested) == (4, 3) and result.reconciles
    assert "blujay" in result.manifest.classes  # the label space still covers the quarantined row


def test_missing_soundscape_drops_all_its_windows(birdclef_root: Path) -> None:
    (birdclef_root / "test_soundscapes/sc1.ogg").unlink()
    result = read_birdclef(birdclef_root)
    assert [(Path(r.path).name, r.reason) for r in result.quarantine] == [("sc1.ogg", "missing")]
    assert len(result.manifest.split("test")) == 0 and len(result.manifest.split("train")) == 3
    assert (result.found, result.ingested) == (4, 3) and result.reconciles
    assert result.manifest.classes == ("amerob", "blujay", "houspa", "norcar")


def test_bad_audio_files_are_quarantined_by_reason(birdclef_root: Path) -> None:
    not_audio = birdclef_root / "train_audio/amerob/XC101.wav"
    not_audio.write_bytes(b"not audio at all")
    flac = birdclef_root / "train_audio/norcar/XC200.flac"
    data = flac.read_bytes()
    flac.write_bytes(data[: len(data) // 2])
    result = read_birdclef(birdclef_root)
    reasons = {Path(r.path).name: r.reason for r in result.quarantine}
    assert reasons == {"XC101.wav": "not_audio", "XC200.flac": "truncated"}
    by_name = {Path(r.path).name: r for r in result.quarantine}
    assert by_name["XC101.wav"].sha256 == hashlib.sha256(b"not audio at all").hexdigest()
    assert by_name["XC101.wav"].size_bytes == 16
    assert result.manifest.split("train")["recording_id"].tolist() == ["amerob/XC100"]
    assert (result.found, result.ingested, len(result.quarantine)) == (4, 2, 2)


def test_files_shorter_than_the_minimum_are_quarantined(birdclef_root: Path) -> None:
    result = read_birdclef(birdclef_root, min_duration_s=2.5)  # XC101 lasts 2.0 s
    (record,) = result.quarantine
    assert (Path(record.path).name, record.reason) == ("XC101.wav", "too_short")
    assert "2.000 s" in record.detail and "2.5 s" in record.detail
    assert result.reconciles and result.ingested == 3


@pytest.mark.parametrize(
    "row,text,problem",
    [(1, "['norcar'", r"train\.csv line 3: secondary_labels"), (0, "{'a': 1}", r"train\.csv line 2.*not a list")],
)
def test_bad_secondary_labels_name_the_row(birdclef_root: Path, row: int, text: str, problem: str) -> None:
    train = pd.read_csv(birdclef_root / "train.csv")
    train.loc[row, "secondary_labels"] = text
    train.to_csv(birdclef_root / "train.csv", index=False)
    with pytest.raises(ManifestError, match=problem):
        read_birdclef(birdclef_root)


def test_file_shorter_than_its_labelled_window_is_quarantined(birdclef_root: Path) -> None:
    labels = pd.read_csv(birdclef_root / "soundscape_labels.csv", keep_default_na=False)
    labels.loc[2, "end_s"] = 20.0
    labels.to_csv(birdclef_root / "soundscape_labels.csv", index=False)
    result = read_birdclef(birdclef_root)
    (record,) = result.quarantine
    assert (Path(record.path).name, record.reason) == ("sc1.ogg", "too_short")
    assert re.search(r"lasts 15\.000 s but .*soundscape_labels\.csv line 4 .*ending at 20\.0 s", record.detail)
    assert len(result.manifest.split("test")) == 0 and result.reconciles


def test_bad_window_bounds(birdclef_root: Path) -> None:
    labels = pd.read_csv(birdclef_root / "soundscape_labels.csv", keep_default_na=False)
    labels["start_s"] = labels["start_s"].astype(str)
    labels.loc[0, "start_s"] = "soon"
    labels.to_csv(birdclef_root / "soundscape_labels.csv", index=False)
    with pytest.raises(ManifestError, match=r"line 2: start_s 'soon'"):
        read_birdclef(birdclef_root)
