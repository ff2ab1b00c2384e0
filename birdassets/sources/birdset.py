"""Read a local copy of one BirdSet configuration (DBD-research-group/BirdSet, HF hub) into a Manifest.

BirdSet rows (``datasets`` schema, see BirdSet's loading script) carry, among columns we ignore:

==========================  =====================================================================
column                      meaning
==========================  =====================================================================
``filepath``                audio file (absolute, or relative to ``root``); falls back to
                            ``audio.path`` when the column is absent
``ebird_code``              ``ClassLabel`` index of the focal species; ``-1``/null: none
``ebird_code_multilabel``   list of ``ClassLabel`` indices (``test_5s``: every species in the window)
``ebird_code_secondary``    list of eBird code strings (ignored: already folded into the multilabel)
``start_time``/``end_time`` window bounds, seconds (``test_5s``); null for whole focal files
``detected_events``         list of ``[start, end]`` call events (ignored here)
==========================  =====================================================================

Splits: ``train`` (focal Xeno-canto recordings, weak labels, whole file: labels =
``ebird_code`` + ``ebird_code_multilabel``) becomes our ``"train"``; ``test_5s`` (5-s multi-label
soundscape windows: labels = ``ebird_code_multilabel``, ``primary_label = ""``) becomes our ``"test"``.
BirdSet's ``test`` split (unprocessed strong-labelled soundscapes) is not read.

Local layouts found (``root`` and, when ``config`` is given, ``root/<config>``):

* files named ``<split>-00000-of-00001.parquet``, ``<split>.parquet``, ``<split>*.arrow``, or the HF
  cache's ``<builder>-<split>[-00000-of-00002].arrow`` (Arrow IPC stream or file format);
* ``<split>/*.parquet`` / ``<split>/*.arrow`` (the hub's ``refs/convert/parquet`` layout
  ``<config>/<split>/0000.parquet``).

The label space is BirdSet's full class list, in its order, read from ``dataset_info.json`` (HF
format: ``features.ebird_code.names``; ``dataset_infos.json`` keyed by config also works) or from
``<config>_ebird_codes.json`` (``{"id2label": {"0": "ostric2", ...}}``, as in BirdSet's
``resources/ebird_codes/``). Test windows may end past the file end (the loader pads); only a window
starting after the end makes its file ``too_short`` (quarantined).

Every referenced audio file is checked once (:func:`birdassets.sources.ingest.scan_audio`); missing,
unreadable, corrupt, truncated, ... or too-short files are quarantined with their reason and their
rows left out of the manifest (see :func:`birdassets.sources.birdclef.read_birdclef`: table problems
still raise, recording ids are computed over all rows).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from birdassets.sources.ingest import AudioFile, IngestResult, ingest_rows
from birdassets.sources.manifest import ManifestError

SPLITS: dict[str, str] = {"train": "train", "test_5s": "test"}
"""BirdSet split -> manifest split."""
READ_COLUMNS: tuple[str, ...] = ("filepath", "audio", "ebird_code", "ebird_code_multilabel", "start_time", "end_time")
_TABLE_SUFFIXES = (".parquet", ".arrow")


def _split_pattern(split: str) -> re.Pattern[str]:
    # "<split>..." or "<builder>-<split>[-NNNNN-of-NNNNN]"; the char after the split name must end it,
    # so "test" never matches "test_5s" files.
    return re.compile(rf"^(?:[^/]*-)?{re.escape(split)}(?:[-.][^/]*)?\.(?:parquet|arrow)$")


def _search_dirs(root: Path, config: str | None) -> list[Path]:
    dirs = [root / config] if config and (root / config).is_dir() else []
    return dirs + [root]


def split_files(root: str | Path, split: str, config: str | None = None) -> list[Path]:
    """Parquet/arrow files holding ``split`` (see the module docstring for the layouts), sorted."""
    root = Path(root)
    pattern = _split_pattern(split)
    found: set[Path] = set()
    for directory in _search_dirs(root, config):
        found.update(p for p in directory.iterdir() if p.is_file() and pattern.match(p.name))
        if (directory / split).is_dir():
            found.update(p for p in (directory / split).iterdir() if p.is_file() and p.suffix in _TABLE_SUFFIXES)
    return sorted(found)


def _names_from_features(features: dict, source: Path) -> list[str] | None:
    for column in ("ebird_code", "ebird_code_multilabel"):
        feature = features.get(column)
        while isinstance(feature, dict) and "names" not in feature and "feature" in feature:
            feature = feature["feature"]  # Sequence(ClassLabel) / List(ClassLabel)
        if isinstance(feature, dict) and "names" in feature:
            names = feature["names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ManifestError(f"{source}: features.{column}.names is not a list of strings")
            return names
    return None


def _names_from_dataset_info(path: Path, config: str | None) -> list[str] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: cannot be read as JSON ({error})") from error
    candidates = [info] if "features" in info else []
    if config and isinstance(info.get(config), dict):
        candidates.append(info[config])  # dataset_infos.json: {config: {features: ...}}
    if not candidates and len(info) == 1 and isinstance(next(iter(info.values())), dict):
        candidates.append(next(iter(info.values())))
    for candidate in candidates:
        names = _names_from_features(candidate.get("features") or {}, path)
        if names is not None:
            return names
    return None


def _names_from_id2label(path: Path) -> list[str]:
    try:
        id2label = json.loads(path.read_text())["id2label"]
        pairs = sorted((int(index), str(name)) for index, name in id2label.items())
    except (OSError, json.JSONDecodeError, KeyError, ValueError, AttributeError) as error:
        raise ManifestError(f"{path}: expected {{'id2label': {{'0': 'code', ...}}}} ({error!r})") from error
    if [index for index, _ in pairs] != list(range(len(pairs))):
        raise ManifestError(f"{path}: id2label indices are not 0..{len(pairs) - 1}")
    return [name for _, name in pairs]


def birdset_classes(root: str | Path, config: str | None = None) -> tuple[str, ...]:
    """BirdSet's class list for this copy, in ``ClassLabel`` index order.

    Raises:
        ManifestError: no ``dataset_info.json`` with an ``ebird_code`` ClassLabel and no
            ``<config>_ebird_codes.json``; or such a file is malformed or has duplicate names.
    """
    root = Path(root)
    names: list[str] | None = None
    source: Path | None = None
    for directory in _search_dirs(root, config):
        for info_name in ("dataset_info.json", "dataset_infos.json"):
            if names is None and (directory / info_name).is_file():
                source = directory / info_name
                names = _names_from_dataset_info(source, config)
    if names is None:
        for directory in _search_dirs(root, config):
            pattern = f"{config}_ebird_codes.json" if config else "*_ebird_codes.json"
            matches = sorted(directory.glob(pattern))
            if len(matches) > 1:
                raise ManifestError(f"{directory}: several class lists {[m.name for m in matches]}; pass config=")
            if matches:
                source = matches[0]
                names = _names_from_id2label(source)
                break
    if names is None:
        raise ManifestError(
            f"{root}: no BirdSet class list (dataset_info.json with an ebird_code ClassLabel, "
            f"or {config or '<config>'}_ebird_codes.json)"
        )
    if len(set(names)) != len(names):
        raise ManifestError(f"{source}: class names are not unique")
    return tuple(names)


def read_table(path: str | Path) -> pa.Table:
    """A parquet file, or an Arrow IPC stream (the HF ``datasets`` cache format) or IPC file.

    Only the columns in :data:`READ_COLUMNS` that exist are kept.

    Raises:
        ManifestError: the file is neither parquet nor Arrow IPC.
    """
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            present = set(pq.read_schema(path).names)
            return pq.read_table(path, columns=[c for c in READ_COLUMNS if c in present])
        with pa.memory_map(str(path)) as source:
            try:
                table = ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                table = ipc.open_file(source).read_all()
    except (pa.ArrowException, OSError) as error:
        raise ManifestError(f"{path}: cannot be read as a parquet/arrow table ({error})") from error
    return table.select([c for c in READ_COLUMNS if c in table.column_names])


def _class_name(value, classes: tuple[str, ...], where: str) -> str | None:
    """ClassLabel value -> name; ``None`` for "no label" (null or -1)."""
    if value is None:
        return None
    if isinstance(value, str):  # a copy that stored names instead of indices
        if value not in classes:
            raise ManifestError(f"{where}: unknown class name {value!r}")
        return value
    index = int(value)
    if index == -1:
        return None
    if not 0 <= index < len(classes):
        raise ManifestError(f"{where}: unknown class index {index} (the class list has {len(classes)} names)")
    return classes[index]


def _split_files_of(root: Path, config: str | None) -> dict[str, list[Path]]:
    """:func:`split_files` of every split in :data:`SPLITS`; raises :class:`ManifestError` when there are none."""
    files = {split: split_files(root, split, config) for split in SPLITS}
    if not any(files.values()):
        raise ManifestError(
            f"{root}: no BirdSet split files (train*/test_5s* .parquet or .arrow, or <split>/ folders)"
            + (f" for config {config!r}" if config else "")
        )
    return files


def _filepaths(table: pa.Table, path: Path) -> list[str | None]:
    """Each row's audio path as stored: ``filepath``, else ``audio.path``."""
    if "filepath" in table.column_names:
        return table.column("filepath").to_pylist()
    if "audio" in table.column_names:
        return [(audio or {}).get("path") for audio in table.column("audio").to_pylist()]
    raise ManifestError(f"{path}: has neither a 'filepath' nor an 'audio' column")


def _window(start, end, where: str) -> tuple[float, float]:
    """A ``test_5s`` row's ``(start_s, end_s)``, seconds; must be finite with ``0 <= start < end``."""
    if start is None or end is None:
        raise ManifestError(f"{where}: test_5s window without start_time/end_time")
    start_s, end_s = float(start), float(end)
    if not (math.isfinite(start_s) and math.isfinite(end_s) and 0 <= start_s < end_s):
        raise ManifestError(f"{where}: invalid window [{start_s}, {end_s}] s")
    return start_s, end_s


def _rows_of_table(path: Path, root: Path, split: str, classes: tuple[str, ...]) -> list[dict]:
    """The manifest rows (plus ``_where``) of one split file; ``split`` is BirdSet's name (:data:`SPLITS`)."""
    table = read_table(path)
    filepaths = _filepaths(table, path)

    def column(name: str) -> list:
        return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows

    focal, multi = column("ebird_code"), column("ebird_code_multilabel")
    starts, ends = column("start_time"), column("end_time")
    ours = SPLITS[split]
    rows = []
    for i, filepath in enumerate(filepaths):
        where = f"{path} row {i}"
        if not filepath:
            raise ManifestError(f"{where}: empty filepath")
        audio = Path(filepath) if Path(filepath).is_absolute() else root / filepath
        multilabel = [_class_name(v, classes, where) for v in (multi[i] or [])]
        primary = _class_name(focal[i], classes, where) if ours == "train" else None
        start_s, end_s = _window(starts[i], ends[i], where) if ours == "test" else (math.nan, math.nan)
        rows.append(
            {
                "recording_id": f"{audio.stem}@{start_s:.1f}" if ours == "test" else audio.stem,
                "path": audio.resolve(),
                "primary_label": primary or "",
                "labels": list(dict.fromkeys(x for x in [primary, *multilabel] if x is not None)),
                "split": ours,
                "start_s": start_s,
                "end_s": end_s,
                "_where": where,
            }
        )
    return rows


def read_birdset(
    root: str | Path,
    config: str | None = None,
    *,
    min_duration_s: float = 0.0,
    decode: Literal["full", "tail"] = "full",
) -> IngestResult:
    """Read a local BirdSet copy (see the module docstring) into a manifest plus its quarantine.

    Args:
        root: folder with the split files and the class list.
        config: BirdSet configuration name (e.g. ``"HSN"``): also searches ``root/<config>/`` and
            picks ``<config>_ebird_codes.json``.
        min_duration_s: files shorter than this are quarantined as ``too_short`` (the preset's ``min_last_s``).
        decode: how thoroughly files are checked (:func:`birdassets.sources.ingest.scan_audio`).

    Returns:
        ``"train"`` rows (whole focal files) and ``"test"`` rows (``test_5s`` windows) of usable
        files, classes = BirdSet's full class list in its index order; the quarantined files;
        ``found`` = distinct audio files the tables reference.

    Raises:
        ManifestError: no class list, no ``train``/``test_5s`` files, an unreadable table, an unknown
            class index, an empty filepath, or a window without bounds or with ``end <= start``; the
            message names the table file and row.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ManifestError(f"{root}: BirdSet folder does not exist")
    classes = birdset_classes(root, config)
    files = _split_files_of(root, config)
    rows = [
        row for split, paths in files.items() for path in paths for row in _rows_of_table(path, root, split, classes)
    ]

    def window_problem(row: dict, fact: AudioFile) -> str | None:
        if row["start_s"] >= fact.duration_s:
            return f"has a window starting at {row['start_s']} s"
        return None

    return ingest_rows(rows, classes, min_duration_s, decode, window_problem)
