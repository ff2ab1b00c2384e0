"""Raven Pro selection tables: read (annotations in) and write (detections out).

A selection table is tab-separated text (``<recording>.Table.1.selections.txt``) with one row per selection and
view: ``Selection``, ``View``, ``Channel``, ``Begin Time (s)``, ``End Time (s)``, ``Low Freq (Hz)``,
``High Freq (Hz)``, then any annotation columns (``Species``, ``Annotation``, ...) and optionally ``Begin File``.
Raven writes one row per view (``Waveform 1``, ``Spectrogram 1``) of the same selection; they are one selection.
A table with a header and no rows means "annotated, nothing present".
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.annotations.labelling import LABEL_COLUMN, LabelRule
from birdassets.atomic import write_text

MEASUREMENTS = {"begin_s": "Begin Time (s)", "end_s": "End Time (s)", "low_hz": "Low Freq (Hz)",
                "high_hz": "High Freq (Hz)"}
"""Our selection frame's numeric columns -> Raven's."""
REQUIRED_COLUMNS = ("Selection", "View", "Channel", *MEASUREMENTS.values())
"""Columns every Raven selection table has (Raven Pro 1.6's defaults)."""
TABLE_SUFFIX = ".selections.txt"
BEGIN_FILE = "Begin File"
FILE_OFFSET = "File Offset (s)"
"""In a table over several files, where the selection begins within its ``Begin File``, seconds."""
SELECTION_COLUMNS = {**MEASUREMENTS, "begin_file": BEGIN_FILE, "file_offset_s": FILE_OFFSET}
"""Our selection frame's columns -> Raven's (the optional ones last)."""


class RavenTableError(ValueError):
    """A file that is not a readable selection table; the message names the file and the problem."""


@dataclass(frozen=True)
class Selections:
    """The selections of one table.

    Attributes:
        frame: one row per selection: ``selection`` (int), ``begin_s``, ``end_s`` (seconds from the start of the
            recording; within ``begin_file`` when the table has a ``File Offset (s)`` column), ``low_hz``,
            ``high_hz``, ``label`` (str), ``begin_file`` (the file's name, or ``""`` without a ``Begin File``
            column).
        empty_labels: rows dropped because their label cell was empty.
    """

    frame: pd.DataFrame
    empty_labels: int


def read_selection_table(path: str | Path, label_column: str = LABEL_COLUMN) -> Selections:
    """The selections of a Raven table, one row per ``Selection`` (its views merged; the first view's times).

    Raises:
        RavenTableError: unreadable, a required or the label column missing, times that are not numbers or an
            end before a begin (the first such selection named).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    except (OSError, ValueError) as error:
        raise RavenTableError(f"{path}: not a readable selection table ({error})") from None
    missing = [name for name in (*REQUIRED_COLUMNS, label_column) if name not in table.columns]
    if missing:
        raise RavenTableError(f"{path}: not a Raven selection table (missing column {', '.join(missing)})")
    table = table.drop_duplicates("Selection", keep="first")
    labels = table[label_column].str.strip()
    kept = table[labels != ""]
    frame = _numeric_selections(path, kept, labels[labels != ""])
    return Selections(frame, int((labels == "").sum()))


def _numeric_selections(path: Path, table: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """The typed selection frame of :func:`read_selection_table` (checks times)."""
    frame = pd.DataFrame({"selection": pd.to_numeric(table["Selection"], errors="coerce")})
    for name, column in MEASUREMENTS.items():
        frame[name] = pd.to_numeric(table[column], errors="coerce")
    bad = frame[frame.isna().any(axis=1) | (frame["end_s"] < frame["begin_s"]) | (frame["begin_s"] < 0)]
    if len(bad):
        raise RavenTableError(f"{path}: selection {table.loc[bad.index[0], 'Selection']!r} has missing, negative "
                              "or reversed times")
    frame["selection"] = frame["selection"].astype(int)
    if FILE_OFFSET in table:  # a table over several files: times count from the first file's start
        offset = pd.to_numeric(table[FILE_OFFSET], errors="coerce").fillna(frame["begin_s"])
        frame["end_s"], frame["begin_s"] = offset + frame["end_s"] - frame["begin_s"], offset
    frame["label"] = labels.to_numpy(dtype=str)
    frame["begin_file"] = table[BEGIN_FILE].str.strip().to_numpy(dtype=str) if BEGIN_FILE in table else ""
    return frame.reset_index(drop=True)


def label_windows(selections: pd.DataFrame, starts_s: np.ndarray, clip_s: float, classes: Sequence[str],
                  rule: LabelRule = LabelRule()) -> np.ndarray:
    """Multi-hot labels ``[windows, classes]`` uint8 of windows ``[start, start + clip_s)`` (seconds): a window
    carries a class when a selection of it overlaps the window by at least :meth:`LabelRule.needed_s` of the
    selection's length (by default min(0.5 s, half the call)). ``classes`` holds every label of ``selections``."""
    starts = np.asarray(starts_s, dtype=np.float64)[:, None]  # [windows, 1]
    begin, end = selections["begin_s"].to_numpy()[None, :], selections["end_s"].to_numpy()[None, :]
    overlap = np.minimum(starts + clip_s, end) - np.maximum(starts, begin)  # [windows, selections]
    needed = rule.needed_s(end - begin)  # [1, selections]
    hits = overlap >= needed  # [windows, selections]
    index = {name: k for k, name in enumerate(classes)}
    one_hot = np.zeros((len(selections), len(classes)), np.uint8)  # [selections, classes]
    one_hot[np.arange(len(selections)), [index[label] for label in selections["label"]]] = 1
    return (hits.astype(np.uint8) @ one_hot > 0).astype(np.uint8)


def write_selection_table(path: str | Path, selections: pd.DataFrame, label_column: str = LABEL_COLUMN) -> Path:
    """A Raven selection table, written atomically: one ``Spectrogram 1`` row per selection, numbered from 1.

    Args:
        path: the ``*.selections.txt`` file.
        selections: one row per selection: ``begin_s``, ``end_s`` (s), ``low_hz``, ``high_hz``, ``label``, and
            optionally ``begin_file`` + ``file_offset_s`` (a table over several files: ``begin_s`` then counts
            on the files' joint timeline, as Raven's) and ``confidence`` (a ``Confidence`` column).
        label_column: the name of the label column.
    """
    optional = [name for name in ("begin_file", "file_offset_s") if name in selections]
    columns = [*REQUIRED_COLUMNS, *(SELECTION_COLUMNS[name] for name in optional), label_column]
    table = pd.DataFrame({"Selection": np.arange(1, len(selections) + 1), "View": "Spectrogram 1", "Channel": 1})
    for name, column in SELECTION_COLUMNS.items():
        if name in selections:
            values = selections[name].to_numpy()
            table[column] = values if name == "begin_file" else [f"{v:.6f}" for v in values]
    table[label_column] = selections["label"].to_numpy(dtype=str)
    if "confidence" in selections:
        columns.append("Confidence")
        table["Confidence"] = [f"{v:.4f}" for v in selections["confidence"]]
    return write_text(path, table[columns].to_csv(sep="\t", index=False, lineterminator="\n"))
