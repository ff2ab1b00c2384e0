"""read_birdset on a tiny local BirdSet copy: real audio + parquet/arrow tables in BirdSet's HF schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from birdassets.sources.birdset import birdset_classes, read_birdset, split_files
from birdassets.sources.manifest import ManifestError

RATE = 32000
CLASSES = ["ostric2", "norcar", "amerob", "blujay", "houspa"]  # deliberately not sorted

SCHEMA = pa.schema(
    [
        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("filepath", pa.string()),
        ("start_time", pa.float64()),
        ("end_time", pa.float64()),
        ("ebird_code", pa.int64()),
        ("ebird_code_multilabel", pa.list_(pa.int64())),
        ("ebird_code_secondary", pa.list_(pa.string())),
        ("detected_events", pa.list_(pa.list_(pa.float64()))),
        ("quality", pa.string()),
    ]
)


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _table(rows: list[dict]) -> pa.Table:
    full = [
        {
            "audio": {"bytes": None, "path": row["filepath"]},
            "start_time": None,
            "end_time": None,
            "ebird_code": None,
            "ebird_code_multilabel": [],
            "ebird_code_secondary": [],
            "detected_events": [[0.5, 1.0]],
            "quality": "A",
            **row,
        }
        for row in rows
    ]
    return pa.Table.from_pylist(full, schema=SCHEMA)


def _write_stream(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


@pytest.fixture()
def birdset_root(tmp_path: Path) -> Path:
    root = tmp_path / "HSN"
    (root / "audio").mkdir(parents=True)
    sf.write(root / "audio/XC1.ogg", _tone(3.0, 3000), RATE, format="OGG", subtype="VORBIS")
    sf.write(root / "audio/XC2.wav", _tone(2.5, 4000), RATE)
    elsewhere = tmp_path / "hf_cache" / "XC3.flac"
    elsewhere.parent.mkdir()
    sf.write(elsewhere, _tone(4.0, 5000), RATE, format="FLAC")
    sf.write(root / "audio/soundscape_1.ogg", _tone(12.0, 6000), RATE, format="OGG", subtype="VORBIS")

    train_a = _table(
        [
            {
                "filepath": "audio/XC1.ogg",
                "ebird_code": 2,
                "ebird_code_multilabel": [2, 1],
                "ebird_code_secondary": ["norcar"],
            },
            {"filepath": "audio/XC2.wav", "ebird_code": 1, "ebird_code_multilabel": [1]},
        ]
    )
    train_b = _table([{"filepath": str(elsewhere), "ebird_code": -1, "ebird_code_multilabel": [4]}])
    pq.write_table(train_a, root / "train-00000-of-00002.parquet")
    pq.write_table(train_b, root / "train-00001-of-00002.parquet")
    test_5s = _table(
        [
            {"filepath": "audio/soundscape_1.ogg", "start_time": 0.0, "end_time": 5.0, "ebird_code_multilabel": [3, 0]},
            {"filepath": "audio/soundscape_1.ogg", "start_time": 5.0, "end_time": 10.0, "ebird_code_multilabel": []},
            {"filepath": "audio/soundscape_1.ogg", "start_time": 10.0, "end_time": 15.0, "ebird_code_multilabel": [1]},
        ]
    )
    _write_stream(root / "birdset-test_5s.arrow", test_5s)  # HF datasets cache naming + IPC stream
    # the unprocessed strong-label split must be ignored
    _write_stream(root / "birdset-test.arrow", _table([{"filepath": "audio/missing.ogg", "ebird_code": 99}]))
    info = {
        "builder_name": "birdset",
        "config_name": "HSN",
        "features": {
            "ebird_code": {"names": CLASSES, "_type": "ClassLabel"},
            "ebird_code_multilabel": {"feature": {"names": CLASSES, "_type": "ClassLabel"}, "_type": "Sequence"},
        },
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


def test_reads_train_and_test_5s(birdset_root: Path) -> None:
    result = read_birdset(birdset_root)
    assert (result.found, result.ingested, result.quarantine) == (4, 4, ())  # 3 focal files + 1 soundscape
    manifest = result.manifest
    assert manifest.classes == tuple(CLASSES)  # BirdSet order, full label space (blujay only in test)
    assert len(manifest.split("train")) == 3 and len(manifest.split("test")) == 3

    train = manifest.split("train").set_index("recording_id")
    assert list(train.index) == ["XC1", "XC2", "XC3"]
    assert train.loc["XC1", "primary_label"] == "amerob"
    assert train.loc["XC1", "labels"] == ["amerob", "norcar"]
    assert train.loc["XC3", "primary_label"] == ""  # ebird_code -1: no focal label
    assert train.loc["XC3", "labels"] == ["houspa"]
    assert train.loc["XC3", "path"] == str((birdset_root.parent / "hf_cache/XC3.flac").resolve())
    assert train.loc["XC2", "duration_s"] == pytest.approx(2.5, abs=1e-3)
    assert train["start_s"].isna().all()
    ogg = birdset_root / "audio/XC1.ogg"
    assert train.loc["XC1", "sha256"] == hashlib.sha256(ogg.read_bytes()).hexdigest()

    test = manifest.split("test").set_index("recording_id")
    assert list(test.index) == ["soundscape_1@0.0", "soundscape_1@10.0", "soundscape_1@5.0"]
    assert test.loc["soundscape_1@0.0", "labels"] == ["blujay", "ostric2"]
    assert test.loc["soundscape_1@10.0", ["start_s", "end_s"]].tolist() == [10.0, 15.0]  # may run past the end
    assert (test["primary_label"] == "").all()
    assert test["duration_s"].iloc[0] == pytest.approx(12.0, abs=1e-3)

    # columns: ostric2, norcar, amerob, blujay, houspa
    np.testing.assert_array_equal(
        manifest.label_matrix(manifest.split("train")), [[0, 1, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]]
    )
    np.testing.assert_array_equal(
        manifest.label_matrix(manifest.split("test")), [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    )


def test_config_folder_layout_with_ebird_codes_json(tmp_path: Path) -> None:
    root = tmp_path / "birdset"
    (root / "PER/train").mkdir(parents=True)
    (root / "PER/test_5s").mkdir(parents=True)
    sf.write(root / "XC9.wav", _tone(1.0, 2500), RATE)
    sf.write(root / "scape.wav", _tone(10.0, 2500), RATE)
    codes = ["zzzbird", "aaabird"]
    (root / "PER_ebird_codes.json").write_text(
        json.dumps({"id2label": {"1": codes[1], "0": codes[0]}, "label2id": {c: i for i, c in enumerate(codes)}})
    )
    train = _table([{"filepath": "XC9.wav", "ebird_code": 1, "ebird_code_multilabel": [1]}])
    pq.write_table(train, root / "PER/train/0000.parquet")
    pq.write_table(
        _table([{"filepath": "scape.wav", "start_time": 5.0, "end_time": 10.0, "ebird_code_multilabel": [0, 1]}]),
        root / "PER/test_5s/0000.parquet",
    )
    manifest = read_birdset(root, config="PER").manifest
    assert manifest.classes == ("zzzbird", "aaabird")
    assert manifest.table["recording_id"].tolist() == ["scape@5.0", "XC9"]
    assert manifest.table["split"].tolist() == ["test", "train"]
    np.testing.assert_array_equal(manifest.label_matrix(), [[1, 1], [0, 1]])
    assert birdset_classes(root) == ("zzzbird", "aaabird")  # the only *_ebird_codes.json


def test_split_file_patterns_do_not_confuse_test_and_test_5s(birdset_root: Path) -> None:
    assert [p.name for p in split_files(birdset_root, "test_5s")] == ["birdset-test_5s.arrow"]
    assert [p.name for p in split_files(birdset_root, "test")] == ["birdset-test.arrow"]
    assert [p.name for p in split_files(birdset_root, "train")] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]


def test_arrow_ipc_file_format_also_reads(birdset_root: Path) -> None:
    table = ipc.open_stream(pa.memory_map(str(birdset_root / "birdset-test_5s.arrow"))).read_all()
    (birdset_root / "birdset-test_5s.arrow").unlink()
    with pa.OSFile(str(birdset_root / "test_5s.arrow"), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert len(read_birdset(birdset_root).manifest.split("test")) == 3


def test_unknown_class_index_names_file_and_row(birdset_root: Path) -> None:
    table = pq.read_table(birdset_root / "train-00001-of-00002.parquet")
    column = table.schema.get_field_index("ebird_code_multilabel")
    bad = table.set_column(column, "ebird_code_multilabel", pa.array([[7]], pa.list_(pa.int64())))
    pq.write_table(bad, birdset_root / "train-00001-of-00002.parquet")
    with pytest.raises(ManifestError, match=r"train-00001-of-00002\.parquet row 0: unknown class index 7"):
        read_birdset(birdset_root)


def test_missing_and_bad_audio_are_quarantined(birdset_root: Path) -> None:
    (birdset_root / "audio/XC2.wav").unlink()
    scape = birdset_root / "audio/soundscape_1.ogg"
    scape.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))  # an image under an audio name
    result = read_birdset(birdset_root)
    assert [(Path(r.path).name, r.reason, r.size_bytes) for r in result.quarantine] == [
        ("XC2.wav", "missing", None),
        ("soundscape_1.ogg", "not_audio", 208),
    ]
    assert "PNG" in result.quarantine[1].detail
    assert result.manifest.table["recording_id"].tolist() == ["XC1", "XC3"]  # no test windows left
    assert (result.found, result.ingested) == (4, 2) and result.reconciles
    assert result.manifest.classes == tuple(CLASSES)


def test_too_short_file_is_quarantined(birdset_root: Path) -> None:
    result = read_birdset(birdset_root, min_duration_s=2.75)  # XC2 lasts 2.5 s
    assert [(Path(r.path).name, r.reason) for r in result.quarantine] == [("XC2.wav", "too_short")]
    assert result.reason_counts() == {"too_short": 1}
    assert result.ingested == 3 and result.reconciles


def test_no_split_files(birdset_root: Path) -> None:
    for path in birdset_root.glob("*.parquet"):
        path.unlink()
    (birdset_root / "birdset-test_5s.arrow").unlink()
    with pytest.raises(ManifestError, match="no BirdSet split files"):
        read_birdset(birdset_root)


def test_no_class_list(birdset_root: Path) -> None:
    (birdset_root / "dataset_info.json").unlink()
    with pytest.raises(ManifestError, match="no BirdSet class list"):
        read_birdset(birdset_root)


def test_window_without_bounds(birdset_root: Path) -> None:
    table = _table([{"filepath": "audio/soundscape_1.ogg", "start_time": None, "end_time": 5.0}])
    _write_stream(birdset_root / "birdset-test_5s.arrow", table)
    with pytest.raises(ManifestError, match=r"birdset-test_5s\.arrow row 0: test_5s window without"):
        read_birdset(birdset_root)


def test_window_starting_after_file_end_quarantines_the_file(birdset_root: Path) -> None:
    table = _table([{"filepath": "audio/soundscape_1.ogg", "start_time": 20.0, "end_time": 25.0}])
    _write_stream(birdset_root / "birdset-test_5s.arrow", table)
    result = read_birdset(birdset_root)
    (record,) = result.quarantine
    assert (Path(record.path).name, record.reason) == ("soundscape_1.ogg", "too_short")
    assert "lasts 12.000 s but" in record.detail and "row 0 has a window starting at 20.0 s" in record.detail
    assert len(result.manifest.split("test")) == 0 and result.ingested == 3 and result.reconciles
