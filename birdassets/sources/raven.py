"""Annotated soundscapes: a folder of recordings with Raven Pro selection tables, as labelled windows.

Layout: recordings (:data:`~birdassets.sources.folder.AUDIO_EXTENSIONS`) and ``*.selections.txt`` tables anywhere
under ``root`` (:mod:`birdassets.annotations.raven` reads them). A table pairs with its recordings:

* through its ``Begin File`` column, when it has one (a table over several files: each selection belongs to the
  recording of that name, its time within it taken from ``File Offset (s)`` when present);
* otherwise with the recording whose file stem starts the table's name (Raven's
  ``<recording>.Table.1.selections.txt``); the longest such stem wins, one in the table's own folder first.

A recording may have several tables (``Table.1``, ``Table.2``): their selections are pooled. A table with a header
and no rows means "annotated, nothing present". What counts as *found* is what the folder source finds (audio
files); a recording no table pairs with is quarantined as ``unannotated`` (its audio is never checked), and so is one
whose only table cannot be read (the detail names the table and the problem). Tables pairing with no recording are
reported in :attr:`RavenIngest.orphan_tables`.

Every usable recording becomes one manifest row per window of the task's preset, from 0 s (``window_starts``:
5-s, non-overlapping windows for ``birdclef2025``): ``recording_id`` ``"<relative stem>@<start>"``, split
``"train"`` (folds keep the windows of one file together), ``start_s``/``end_s`` the window, ``labels`` the classes
whose selections overlap it by at least ``min(min_overlap_s, min_overlap_fraction x the selection's length)``
(:func:`~birdassets.annotations.raven.label_windows`), ``primary_label`` ``""``. Classes: every label the tables use,
sorted. Rows with an empty label cell are ignored and counted (:attr:`RavenIngest.empty_labels`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.annotations.labelling import LabelRule
from birdassets.annotations.raven import (
    BEGIN_FILE,
    TABLE_SUFFIX,
    RavenTableError,
    label_windows,
    read_selection_table,
)
from birdassets.frontends.presets import MelPreset
from birdassets.frontends.windowing import window_starts
from birdassets.sources.folder import files_under, is_audio, whole_file_row
from birdassets.sources.ingest import (
    UNANNOTATED,
    AudioFile,
    IngestResult,
    QuarantineRecord,
    scan_audio,
    sorted_records,
    unique_ids,
)
from birdassets.sources.manifest import Manifest, file_sha256

SPLIT = "train"
"""The split of every annotated window: folds are drawn from them, probes scored out of fold."""


@dataclass
class _Pairing:
    """Tables matched to recordings: each recording's selections (columns of ``Selections.frame``)."""

    selections: dict[Path, list[pd.DataFrame]] = field(default_factory=lambda: defaultdict(list))
    tables: dict[Path, str] = field(default_factory=dict)  # every table that pairs -> sha256
    problems: dict[Path, str] = field(default_factory=dict)  # recording -> why its table cannot be read
    orphans: list[Path] = field(default_factory=list)
    empty_labels: int = 0


@dataclass(frozen=True)
class RavenIngest(IngestResult):
    """An :class:`IngestResult` plus what the tables held.

    The tables read are the manifest's :attr:`~birdassets.sources.manifest.Manifest.annotations`.

    Attributes:
        orphan_tables: tables that pair with no recording.
        empty_labels: selections ignored because their label cell is empty.
    """

    orphan_tables: tuple[str, ...] = ()
    empty_labels: int = 0

    def positive_windows(self) -> dict[str, int]:
        """Windows carrying each class, in class order."""
        counts = self.manifest.label_matrix().sum(axis=0)
        return {name: int(count) for name, count in zip(self.manifest.classes, counts, strict=True)}


def recording_for_table(table: Path, recordings: list[Path]) -> Path | None:
    """The recording whose stem starts ``table``'s name (followed by ``.``): the longest stem, then one in the
    table's folder, then the first in path order; ``None`` when no stem fits."""
    fits = [path for path in recordings if table.name.startswith(path.stem + ".")]
    if not fits:
        return None
    return min(fits, key=lambda path: (-len(path.stem), path.parent != table.parent, str(path)))


def pair_tables(tables: list[Path], recordings: list[Path], rule: LabelRule) -> _Pairing:
    """Read every table and give its selections to their recordings (see the module docstring)."""
    pairing = _Pairing()
    by_name: dict[str, list[Path]] = defaultdict(list)
    for path in recordings:
        by_name[path.name].append(path)
    for table in tables:
        try:
            selections = read_selection_table(table, rule.label_column)
        except RavenTableError as error:
            if (recording := recording_for_table(table, recordings)) is not None:
                pairing.problems[recording] = str(error)
            continue
        if _assign(pairing, table, selections.frame, recordings, by_name):
            pairing.tables[table] = file_sha256(table)
            pairing.empty_labels += selections.empty_labels
        else:
            pairing.orphans.append(table)
    return pairing


def _assign(pairing: _Pairing, table: Path, frame: pd.DataFrame, recordings: list[Path],
            by_name: dict[str, list[Path]]) -> bool:
    """Give one table's selections to their recordings: by ``Begin File`` where a row names one, the others (and
    an empty table) to the recording the table's name pairs with. ``False``: it pairs with none."""
    named = frame["begin_file"] != ""
    paired = False
    for name, rows in frame[named].groupby("begin_file", sort=True):
        candidates = by_name.get(Path(name).name, [])
        if candidates:
            target = min(candidates, key=lambda path: (path.parent != table.parent, str(path)))
            pairing.selections[target].append(rows)
            paired = True
    if named.all() and len(frame):
        return paired
    recording = recording_for_table(table, recordings)
    if recording is not None:
        pairing.selections[recording].append(frame[~named])
    return paired or recording is not None


def window_rows(file: AudioFile, recording_id: str, frame: pd.DataFrame, classes: tuple[str, ...],
                preset: MelPreset, rule: LabelRule) -> list[dict]:
    """One manifest row per preset window of a recording, labelled by its selections ``frame``."""
    starts = np.asarray(window_starts(file.duration_s, preset), dtype=np.float64)  # [windows] s
    labels = label_windows(frame, starts, preset.clip_s, classes, rule)
    rows = []
    for start, hot in zip(starts, labels, strict=True):
        row = whole_file_row(file, f"{recording_id}@{start:.1f}", SPLIT, [classes[c] for c in np.flatnonzero(hot)])
        rows.append({**row, "primary_label": "", "start_s": float(start), "end_s": float(start) + preset.clip_s})
    return rows


def _unannotated(path: Path, pairing: _Pairing) -> QuarantineRecord:
    detail = pairing.problems.get(path, f"no selection table pairs with it (expected {path.stem}.Table.1"
                                        f"{TABLE_SUFFIX} or a '{BEGIN_FILE}' column naming {path.name})")
    return QuarantineRecord(str(path), UNANNOTATED, detail, path.stat().st_size if path.exists() else None, None)


def read_raven(root: str | Path, preset: MelPreset, rule: LabelRule = LabelRule(), *,
               min_duration_s: float = 0.0) -> RavenIngest:
    """Ingest a folder of recordings and their Raven selection tables (see the module docstring).

    Raises:
        ManifestError: ``root`` is not a folder.
    """
    root = Path(root).absolute()
    files = files_under(root)  # one walk: recordings, tables (any letter case), and the rest ignored
    recordings = [path for path in files if is_audio(path)]
    tables = [path for path in files if path.name.lower().endswith(TABLE_SUFFIX)]
    pairing = pair_tables(tables, recordings, rule)
    annotated = [path for path in recordings if path in pairing.selections]
    usable, quarantine = scan_audio(annotated, min_duration_s)
    quarantine += [_unannotated(path, pairing) for path in recordings if path not in pairing.selections]
    frames = {path: pd.concat(pairing.selections[path], ignore_index=True) for path in annotated}
    classes = tuple(sorted({label for frame in frames.values() for label in frame["label"]}))
    ids = dict(zip(recordings, unique_ids(p.relative_to(root).with_suffix("").as_posix() for p in recordings)))
    rows = [row for f in usable for row in window_rows(f, ids[Path(f.path)], frames[Path(f.path)], classes,
                                                           preset, rule)]
    tables_read = tuple(sorted((str(path), digest) for path, digest in pairing.tables.items()))
    manifest = Manifest.from_rows(rows, classes=classes, annotations=tables_read)
    result = RavenIngest(manifest, sorted_records(quarantine), found=len(recordings),
                         ignored=len(files) - len(recordings) - len(tables),
                         orphan_tables=tuple(str(p) for p in pairing.orphans),
                         empty_labels=pairing.empty_labels)
    result.check()
    return result
