"""Detection files, each published atomically: JSON, CSV, a Raven selection table, Audacity label tracks.

* ``json``: :meth:`DetectionResult.to_dict` (scorer, config, one entry per recording with its ``segments``,
  unreadable files);
* ``csv``: :meth:`DetectionResult.windows_frame` (columns :data:`WINDOW_COLUMNS`), one row per window;
* ``raven`` (``*.selections.txt``): one selection per positive window (or per run of overlapping or touching
  positive windows with ``merge``) over every recording, as a Raven Pro multi-file table: ``Begin File``,
  ``File Offset (s)`` (time within the file) and ``Begin Time (s)`` on the files' joint timeline (the recordings one
  after another, in the result's order), a ``Species`` label and a ``Confidence`` (the highest of the windows);
* ``audacity``: one label track per recording (``<start>\\t<end>\\t<label>`` lines, seconds), ``<stem>.txt`` in a
  folder, or the file itself when one recording is written to a ``.txt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from birdassets.annotations.raven import TABLE_SUFFIX, write_selection_table
from birdassets.atomic import write_text

if TYPE_CHECKING:
    from birdassets.detection.rule import DetectionResult

WINDOW_COLUMNS = ["file", "start_s", "duration_s", "confidence", "local_prediction", "global_prediction",
                  "global_confidence"]
"""Columns of the one-row-per-window table (CSV export, DuckDB ``detections``)."""
EXPORT_SUFFIXES = (".json", ".csv", TABLE_SUFFIX)
"""The file names whose format is known from the suffix."""
EXPORT_FORMATS = ("json", "csv", "raven", "audacity")


def format_of(path: str | Path) -> str:
    """The export format a file name asks for (``json``, ``csv`` or ``raven``).

    Raises:
        ValueError: another suffix (the message names the file).
    """
    name = str(path).lower()
    for suffix, kind in zip(EXPORT_SUFFIXES, ("json", "csv", "raven"), strict=True):
        if name.endswith(suffix):
            return kind
    raise ValueError(f"{path}: detections are written as {', '.join(EXPORT_SUFFIXES)} or --format audacity")


def write_detections(result: DetectionResult, path: str | Path, kind: str | None = None, *, label: str | None = None,
                     merge: bool = False) -> Path:
    """Write ``result`` as ``kind`` (default: from the suffix, :func:`format_of`) atomically; returns ``path``.

    ``label`` (default: the scorer's name) and ``merge`` apply to the Raven and Audacity formats.

    Raises:
        ValueError: an unknown format or suffix (the message names the file).
    """
    path = Path(path)
    kind = kind or format_of(path)
    label = label or result.scorer
    if kind == "csv":
        return write_text(path, result.windows_frame().to_csv(index=False))
    if kind == "json":
        return write_text(path, json.dumps(result.to_dict(), indent=1))
    if kind == "raven":
        return write_selection_table(path, raven_selections(result, label, merge))
    if kind == "audacity":
        return write_audacity(result, path, label, merge)
    raise ValueError(f"{path}: unknown detection format {kind!r}; expected one of {EXPORT_FORMATS}")


def positive_spans(result: DetectionResult, merge: bool) -> pd.DataFrame:
    """One row per positive window (``merge``: per run of overlapping or touching ones) of each recording:
    ``file``, ``begin_s``, ``end_s`` (s within the file), ``confidence`` (the run's highest)."""
    frame = result.windows_frame()
    frame = frame[frame["local_prediction"] == 1].assign(begin_s=frame["start_s"],
                                                         end_s=frame["start_s"] + frame["duration_s"])
    frame = frame.sort_values(["file", "begin_s"], kind="stable")
    if merge and len(frame):
        reach = frame.groupby("file", sort=False)["end_s"].cummax()
        starts_run = frame["begin_s"] > reach.groupby(frame["file"], sort=False).shift().fillna(-np.inf)
        run = starts_run.astype(int).cumsum()
        frame = frame.groupby(run, sort=False).agg(file=("file", "first"), begin_s=("begin_s", "min"),
                                                   end_s=("end_s", "max"), confidence=("confidence", "max"))
    return frame[["file", "begin_s", "end_s", "confidence"]].reset_index(drop=True)


def raven_selections(result: DetectionResult, label: str, merge: bool) -> pd.DataFrame:
    """The selection frame of the Raven export (see the module docstring), ``high_hz`` each file's Nyquist."""
    from birdassets.audio.io import probe

    spans = positive_spans(result, merge)
    order = {r.file: k for k, r in enumerate(result.recordings)}
    timeline = dict(zip(order, np.concatenate([[0.0], np.cumsum([r.duration_s for r in result.recordings])])))
    spans = spans.sort_values("file", key=lambda files: files.map(order), kind="stable")
    nyquist = {file: probe(file).sample_rate / 2 for file in spans["file"].unique()}
    return pd.DataFrame({
        "begin_s": spans["file"].map(timeline) + spans["begin_s"], "end_s": spans["file"].map(timeline) + spans["end_s"],
        "low_hz": 0.0, "high_hz": spans["file"].map(nyquist), "begin_file": spans["file"].map(lambda f: Path(f).name),
        "file_offset_s": spans["begin_s"], "label": label, "confidence": spans["confidence"],
    }).reset_index(drop=True)


def write_audacity(result: DetectionResult, out: str | Path, label: str, merge: bool) -> Path:
    """Audacity label tracks (see the module docstring); returns the file or the folder written."""
    from birdassets.sources.ingest import unique_ids

    out = Path(out)
    spans = positive_spans(result, merge)
    files = [r.file for r in result.recordings]
    single = len(files) == 1 and out.suffix.lower() == ".txt"
    names = [out] if single else [out / f"{stem}.txt" for stem in unique_ids(Path(f).stem for f in files)]
    by_file = dict(tuple(spans.groupby("file", sort=False)))
    for file, target in zip(files, names, strict=True):
        rows = by_file.get(file, spans.iloc[:0])
        write_text(target, "".join(f"{b:.6f}\t{e:.6f}\t{label}\n" for b, e in zip(rows["begin_s"], rows["end_s"])))
    return out
