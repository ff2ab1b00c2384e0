"""Read a BirdCLEF-style Kaggle folder (focal ``train_audio`` + labelled soundscape windows) into a Manifest.

Layout (BirdCLEF 2023-2025, plus an optional labelled-soundscape table of our own)::

    root/
      train.csv                      primary_label, secondary_labels, filename, [rating, latitude, ...]
      train_audio/<label>/<id>.ogg   focal recordings; ``filename`` is relative to train_audio/
      soundscape_labels.csv          optional: filename, start_s, end_s, labels (space-separated codes)
      test_soundscapes/<name>.ogg    soundscapes; ``filename`` is relative to test_soundscapes/
      train_soundscapes/<name>.ogg   unlabelled soundscapes: not read here (``birdassets birdclef submit``)
      sample_submission.csv          Kaggle's submission template: not read here

Rows of ``train.csv`` become split ``"train"`` rows covering the whole file (``start_s``/``end_s`` NaN),
labels = ``[primary_label] + secondary_labels`` (duplicates dropped, order kept), ``recording_id`` =
``filename`` without its extension (e.g. ``"amerob/XC123"``).

Rows of ``soundscape_labels.csv`` become split ``"test"`` rows: one labelled window
``[start_s, end_s)`` (seconds) of a soundscape, ``recording_id = "<file-stem>@<start_s:.1f>"``,
``primary_label = ""`` (a soundscape window has no focal species, even when exactly one is labelled;
all its species are in ``labels``, which may be empty for a window without calls).

Duplicate ids (the same file listed twice, two windows starting at the same time) get ``"#2"``,
``"#3"``, ... appended in file order, so every row keeps a unique ``recording_id``.

Every referenced file is checked once (:func:`birdassets.sources.ingest.scan_audio`: verified,
decoded, hashed). A file that is missing, empty, unreadable, not audio, corrupt, header-only,
truncated or shorter than ``min_duration_s`` is quarantined with its reason, and every row that
references it is left out of the manifest; nothing else is dropped. The other rows carry
``duration_s``/``sample_rate``/``channels`` and the sha256 of their file. Problems of the tables
themselves (missing ``train.csv`` or column, unparsable cell, empty filename or label, an empty or
negative window) still raise :class:`ManifestError`: they are errors of the data set description, not
of one file. A file shorter than a window its labels put in it is quarantined as ``too_short`` (the
detail names the table line).

Recording ids and the label space (the sorted union of train primary, train secondary and test
labels) are computed over all rows, quarantined ones included, so they do not change when a file
is repaired or breaks.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pandas as pd

from birdassets.sources.ingest import AudioFile, IngestResult, ingest_rows
from birdassets.sources.manifest import ManifestError

TRAIN_CSV = "train.csv"
TRAIN_AUDIO_DIR = "train_audio"
SOUNDSCAPE_DIR = "test_soundscapes"
SOUNDSCAPE_CSV = "soundscape_labels.csv"
UNLABELLED_SOUNDSCAPE_DIR = "train_soundscapes"
"""Unlabelled soundscapes (BirdCLEF 2025): never read into the manifest; ``birdassets birdclef submit`` predicts
them."""
SAMPLE_SUBMISSION_CSV = "sample_submission.csv"
"""Kaggle's submission template: ``row_id`` (:func:`submission_row_id`), then one column per species code."""
TRAIN_REQUIRED_COLUMNS: tuple[str, ...] = ("primary_label", "secondary_labels", "filename")
SOUNDSCAPE_REQUIRED_COLUMNS: tuple[str, ...] = ("filename", "start_s", "end_s", "labels")
_END_TOLERANCE_S = 0.05  # a window may end this far past the file's end (header rounding)


def submission_row_id(stem: str, end_s: float) -> str:
    """A submission row: ``<soundscape file stem>_<window end in whole seconds>``, e.g. ``"site3_0517_10"``."""
    return f"{stem}_{round(end_s)}"


def parse_secondary_labels(text: str, where: str) -> list[str]:
    """Parse a BirdCLEF ``secondary_labels`` cell (``"['amerob', 'norcar']"``, ``"[]"`` or empty).

    Raises:
        ManifestError: the cell is not a Python list of strings; the message says ``where``.
    """
    text = text.strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise ManifestError(f"{where}: secondary_labels {text!r} is not a Python list literal ({error})") from error
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ManifestError(f"{where}: secondary_labels {text!r} is not a list of label strings")
    return [item.strip() for item in value if item.strip()]


def _dedup(labels: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(labels))


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot be parsed as CSV ({error})") from error
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing required columns {missing} (has {list(table.columns)})")
    return table


def _line(csv_path: Path, row: int) -> str:
    """Human pointer to a data row: header is line 1, so data row 0 is line 2."""
    return f"{csv_path} line {row + 2}"


def _audio_path(base_dir: Path, filename: str, where: str) -> Path:
    """The referenced file's resolved path; whether it exists is :func:`scan_audio`'s business."""
    if not filename.strip():
        raise ManifestError(f"{where}: empty filename")
    return (base_dir / filename.strip()).resolve()


def _parse_seconds(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise ManifestError(f"{where}: {column} {text!r} is not a number of seconds") from error
    if not math.isfinite(value):
        raise ManifestError(f"{where}: {column} {text!r} is not finite")
    return value


def _train_rows(root: Path) -> list[dict]:
    csv_path = root / TRAIN_CSV
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: BirdCLEF train table does not exist")
    table = _read_csv(csv_path, TRAIN_REQUIRED_COLUMNS)
    audio_dir = root / TRAIN_AUDIO_DIR
    rows: list[dict] = []
    where: dict[Path, str] = {}
    for i, record in enumerate(table[list(TRAIN_REQUIRED_COLUMNS)].itertuples(index=False)):
        line = _line(csv_path, i)
        primary = record.primary_label.strip()
        if not primary:
            raise ManifestError(f"{line}: empty primary_label")
        secondary = parse_secondary_labels(record.secondary_labels, line)
        path = _audio_path(audio_dir, record.filename, line)
        where.setdefault(path, line)
        rows.append(
            {
                "recording_id": str(Path(record.filename.strip()).with_suffix("").as_posix()),
                "path": path,
                "primary_label": primary,
                "labels": _dedup([primary, *secondary]),
                "split": "train",
                "start_s": math.nan,
                "end_s": math.nan,
                "_where": line,
            }
        )
    return rows


def _soundscape_rows(root: Path, csv_name: str) -> list[dict]:
    csv_path = root / csv_name
    if not csv_path.is_file():
        return []
    table = _read_csv(csv_path, SOUNDSCAPE_REQUIRED_COLUMNS)
    audio_dir = root / SOUNDSCAPE_DIR
    rows: list[dict] = []
    for i, record in enumerate(table[list(SOUNDSCAPE_REQUIRED_COLUMNS)].itertuples(index=False)):
        line = _line(csv_path, i)
        path = _audio_path(audio_dir, record.filename, line)
        start_s = _parse_seconds(record.start_s, "start_s", line)
        end_s = _parse_seconds(record.end_s, "end_s", line)
        if start_s < 0 or end_s <= start_s:
            raise ManifestError(f"{line}: window [{start_s}, {end_s}] s is empty or negative")
        rows.append(
            {
                "recording_id": f"{Path(record.filename.strip()).stem}@{start_s:.1f}",
                "path": path,
                "primary_label": "",
                "labels": _dedup(record.labels.split()),
                "split": "test",
                "start_s": start_s,
                "end_s": end_s,
                "_where": line,
            }
        )
    return rows


def read_birdclef(
    root: str | Path,
    *,
    soundscape_labels: str = SOUNDSCAPE_CSV,
    min_duration_s: float = 0.0,
    decode: Literal["full", "tail"] = "full",
) -> IngestResult:
    """Read a BirdCLEF folder (see the module docstring for the layout and what is quarantined).

    Args:
        root: the competition folder holding ``train.csv`` and ``train_audio/``.
        soundscape_labels: name (in ``root``) of the optional labelled-window table; absent -> no test rows.
        min_duration_s: files shorter than this are quarantined as ``too_short`` (the preset's ``min_last_s``).
        decode: how thoroughly files are checked (:func:`birdassets.sources.ingest.scan_audio`).

    Returns:
        The manifest (``"train"`` rows: whole focal files; ``"test"`` rows: soundscape windows;
        classes = sorted union of all labels) with the quarantined files; ``found`` counts the
        distinct files the tables reference.

    Raises:
        ManifestError: ``train.csv`` missing, a required column missing, an unparsable cell, or an
            empty/negative window; the message names the table line.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ManifestError(f"{root}: BirdCLEF folder does not exist")
    rows = _train_rows(root) + _soundscape_rows(root, soundscape_labels)

    def window_problem(row: dict, fact: AudioFile) -> str | None:
        if row["end_s"] > fact.duration_s + _END_TOLERANCE_S:
            return f"labels a window ending at {row['end_s']} s"
        return None

    return ingest_rows(rows, None, min_duration_s, decode, window_problem)
