"""A folder of unlabelled recordings (e.g. a field recorder's card) as a manifest, for detection and embedding.

What counts as *found*: every file anywhere under ``root`` (recursively, hidden files and folders
included, symlinked folders not followed) whose extension is one of :data:`AUDIO_EXTENSIONS`, in any
letter case (``.WAV`` counts). Such a file is either ingested or quarantined
(:mod:`birdassets.sources.ingest`): a text file named ``.mp3``, a broken symlink named ``.wav`` or a
macOS ``._x.wav`` resource fork is found and then quarantined, never skipped. Files with other
extensions (``notes.txt``, ``cover.png``, ``.m4a``) are not found; they are only counted in
:attr:`~birdassets.sources.ingest.IngestResult.ignored`.

Every usable file becomes one row:

* ``recording_id``: its path relative to ``root`` without the extension, ``/``-separated
  (``"site1/20240501_0600"``); a second file with the same stem (``a.wav`` next to ``a.flac``) gets
  ``"#2"`` (:func:`birdassets.sources.ingest.unique_ids`, in sorted path order);
* ``split``: :data:`SPLIT` (``"test"``): the recordings are scored/embedded, never trained on;
* ``primary_label = ""``, ``labels = []``; the manifest has no classes;
* whole file (``start_s``/``end_s`` NaN), with duration, rate, channels and sha256 of the file.

Paths are absolute but not resolved (a symlink keeps its own name).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from birdassets.sources.ingest import AudioFile, IngestResult, scan_audio, sorted_records, unique_ids
from birdassets.sources.manifest import Manifest, ManifestError

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
"""Extensions (compared lower-case) of the files a folder source considers audio."""
SPLIT = "test"
"""The split of every folder recording."""


def files_under(root: str | Path) -> list[Path]:
    """Every file under ``root`` (recursively, hidden ones included, symlinked folders not followed), sorted.

    Raises:
        ManifestError: ``root`` is not a folder.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise ManifestError(f"{root}: recordings folder does not exist or is not a folder")
    return sorted(Path(directory) / name for directory, _, names in os.walk(root, followlinks=False) for name in names)


def is_audio(path: Path) -> bool:
    """Whether a file's extension is one of :data:`AUDIO_EXTENSIONS` (any letter case)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def find_audio(root: str | Path) -> tuple[list[Path], int]:
    """Files under ``root`` with an audio extension (sorted), and the number of other files seen.

    Raises:
        ManifestError: ``root`` is not a folder.
    """
    files = files_under(root)
    found = [path for path in files if is_audio(path)]
    return found, len(files) - len(found)


def read_folder(
    root: str | Path,
    *,
    min_duration_s: float = 0.0,
    decode: Literal["full", "tail"] = "full",
    workers: int | None = None,
) -> IngestResult:
    """Ingest a folder of recordings (see the module docstring).

    Args:
        root: the folder.
        min_duration_s: shorter files are quarantined as ``too_short`` (the task preset's ``min_last_s``).
        decode: how thoroughly files are checked (:func:`birdassets.sources.ingest.scan_audio`).
        workers: checking threads (default: see :func:`~birdassets.sources.ingest.scan_audio`).

    Returns:
        The manifest of usable files (split :data:`SPLIT`, no labels), the quarantined ones, ``found``
        = files with an audio extension, ``ignored`` = other files.

    Raises:
        ManifestError: ``root`` is not a folder.
    """
    root = Path(root).absolute()
    paths, ignored = find_audio(root)
    ids = dict(zip(paths, unique_ids(p.relative_to(root).with_suffix("").as_posix() for p in paths)))
    usable, quarantine = scan_audio(paths, min_duration_s, decode=decode, workers=workers)
    manifest = Manifest.from_rows([whole_file_row(f, ids[Path(f.path)]) for f in usable], classes=())
    return IngestResult(manifest, sorted_records(quarantine), found=len(paths), ignored=ignored).check()


def whole_file_row(file: AudioFile, recording_id: str, split: str = SPLIT, labels: Sequence[str] = ()) -> dict:
    """The manifest row of one usable file as a whole (``start_s``/``end_s`` NaN); the primary label is the first
    of ``labels`` ("" without labels). Default: a folder recording, no labels, split :data:`SPLIT`."""
    return {
        "recording_id": recording_id,
        "path": file.path,
        "duration_s": file.duration_s,
        "sample_rate": file.sample_rate,
        "channels": file.channels,
        "primary_label": labels[0] if labels else "",
        "labels": list(labels),
        "split": split,
        "start_s": math.nan,
        "end_s": math.nan,
        "sha256": file.sha256,
    }
