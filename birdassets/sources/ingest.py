"""Ingestion that loses nothing: every audio file a source finds is either ingested or quarantined.

:func:`scan_audio` checks each distinct file once (:func:`birdassets.audio.io.verify`: header, Ogg
pages, a streamed decode of every frame) and hashes it, on a thread pool (libsndfile and hashlib
release the GIL). A file that cannot be used becomes a :class:`QuarantineRecord` with a stable reason
code (:data:`REASONS`); everything else becomes an :class:`AudioFile`. A source turns the usable files
into its :class:`~birdassets.sources.manifest.Manifest` and returns an :class:`IngestResult`, whose
counts reconcile on distinct files::

    found == ingested (distinct paths in the manifest) + quarantined

Table-driven sources (BirdCLEF, BirdSet) build one row dict per recording or labelled window and hand them to
:func:`ingest_rows`, which makes the ids unique (:func:`unique_ids`), checks every distinct file once, quarantines
files too short for their labelled windows and builds the manifest (:func:`manifest_from_rows`).

Reason codes:

===============  ======================================================================================
``missing``      listed by the source (e.g. ``train.csv``) or a broken symlink, but no file is there
``empty``        0 bytes
``unreadable``   exists but cannot be opened (permissions), or is not a regular file (a FIFO, device or
                 socket: refused from ``os.stat`` alone, never opened, so a FIFO cannot hang ingestion)
``not_audio``    no audio container signature and libsndfile cannot open it (text, image, ... named .wav)
``corrupt``      an audio container that cannot be parsed, damage inside the stream, NaN/inf samples,
                 an unfinalised WAV header, or a sample rate outside 1-384 kHz
                 (:data:`~birdassets.audio.io.MIN_SAMPLE_RATE`, :data:`~birdassets.audio.io.MAX_SAMPLE_RATE`)
``header_only``  a valid header with no audio frames
``truncated``    the stream ends before the length its header declares, or the header claims more frames
                 than the file's bytes can hold (see :mod:`birdassets.audio.io` for exactly how)
``too_short``    decodes, but lasts less than ``min_duration_s`` (the task preset's ``min_last_s``:
                 no window could be cut from it)
``unannotated``  an annotated-soundscape source (``raven``) has no readable selection table for it
                 (its audio is not checked)
===============  ======================================================================================

A symbolic link is followed and checked as its target; a quarantined link's detail starts with
``symbolic link to <target>:``. Details are our own words: they never quote a file's bytes (a link
``x.wav -> /etc/passwd`` is "not an audio file: it starts with text").
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from birdassets.atomic import atomic_path
from birdassets.audio.io import FILE_PROBLEMS, AudioError, AudioInfo, link_target, verify
from birdassets.sources.manifest import Manifest, ManifestError, file_sha256

TOO_SHORT = "too_short"
UNANNOTATED = "unannotated"
REASONS: tuple[str, ...] = (*FILE_PROBLEMS, TOO_SHORT, UNANNOTATED)
"""Every quarantine reason code, in the order reports list them."""
_QUARANTINE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("size_bytes", pa.int64()),
        ("sha256", pa.string()),
    ]
)
QUARANTINE_COLUMNS: tuple[str, ...] = tuple(_QUARANTINE_SCHEMA.names)
"""Columns of a quarantine table, in order."""


@dataclass(frozen=True)
class QuarantineRecord:
    """One file that was found but cannot be used.

    Attributes:
        path: absolute path of the file.
        reason: a code from :data:`REASONS`.
        detail: what is wrong, in words (e.g. ``"truncated: the WAV 'data' chunk declares ..."``).
        size_bytes: file size in bytes; ``None`` when the file cannot be stat'ed (``missing``).
        sha256: hex sha256 of the bytes; ``None`` when they cannot be read (``missing``, ``unreadable``).
    """

    path: str
    reason: str
    detail: str
    size_bytes: int | None
    sha256: str | None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"{self.path}: unknown quarantine reason {self.reason!r}; expected one of {REASONS}")


@dataclass(frozen=True)
class AudioFile(AudioInfo):
    """A verified, usable audio file: its :class:`~birdassets.audio.io.AudioInfo` (``frames`` is the decoded
    count) plus what identifies its bytes.

    Attributes:
        size_bytes: file size, bytes.
        sha256: hex sha256 of the bytes.
    """

    size_bytes: int
    sha256: str


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _sha256(path: Path) -> str | None:
    """The file's sha256, or ``None`` when it is not a regular file (never opened: a FIFO would block) or
    cannot be read."""
    try:
        return file_sha256(path) if stat.S_ISREG(path.stat().st_mode) else None
    except OSError:
        return None


def _problem_record(path: Path, error: Exception) -> QuarantineRecord:
    """The quarantine record for a file whose checking raised ``error``.

    The detail is always our own message (:class:`~birdassets.audio.io.AudioError` never quotes a file's
    bytes); an unexpected exception contributes only its type, since its text may quote what it read.
    """
    if isinstance(error, AudioError):
        reason = error.reason if error.reason in REASONS else "corrupt"
        return QuarantineRecord(str(path), reason, error.problem, _size(path), _sha256(path))
    target = link_target(path)
    link = f"symbolic link to {target}: " if target else ""
    if isinstance(error, OSError):
        detail = f"{link}cannot be read ({error.strerror or type(error).__name__})"
        return QuarantineRecord(str(path), "unreadable", detail, _size(path), None)
    detail = f"{link}checking failed ({type(error).__name__}; a bug in the checks, please report it)"
    return QuarantineRecord(str(path), "corrupt", detail, _size(path), _sha256(path))


def examine(
    path: str | Path, min_duration_s: float = 0.0, decode: Literal["full", "tail"] = "full"
) -> AudioFile | QuarantineRecord:
    """Verify and hash one file: an :class:`AudioFile`, or a :class:`QuarantineRecord` saying why not.

    Never raises for a problem of the file itself (an unexpected error becomes ``corrupt``, an
    ``OSError`` ``unreadable``, with the exception in the detail).
    """
    path = Path(path).absolute()
    try:
        info = verify(path, decode=decode)
        size, digest = path.stat().st_size, file_sha256(path)
    except Exception as error:  # noqa: BLE001 - a decoder bug must not fail a whole ingestion
        return _problem_record(path, error)
    if info.duration_s < min_duration_s:
        detail = (
            f"lasts {info.duration_s:.3f} s, shorter than the {min_duration_s:g} s minimum (the preset's "
            "min_last_s): no window can be cut from it"
        )
        return QuarantineRecord(str(path), TOO_SHORT, detail, size, digest)
    return AudioFile(
        path=str(path),
        sample_rate=info.sample_rate,
        channels=info.channels,
        frames=info.frames,
        format=info.format,
        subtype=info.subtype,
        size_bytes=size,
        sha256=digest,
    )


def scan_audio(
    paths: Iterable[str | Path],
    min_duration_s: float = 0.0,
    *,
    decode: Literal["full", "tail"] = "full",
    workers: int | None = None,
) -> tuple[list[AudioFile], list[QuarantineRecord]]:
    """Check every distinct file once (see :func:`examine`), in parallel; input order is kept.

    Args:
        paths: files (duplicates are examined once; paths are made absolute, not resolved).
        min_duration_s: shorter files are quarantined as ``too_short``; the task preset's ``min_last_s``.
        decode: ``"full"`` (default) decodes every frame; ``"tail"`` only the last ones (faster on
            huge collections; damage in the middle of a file then surfaces only when it is loaded).
        workers: threads; default ``min(8, cpu count)``.

    Returns:
        ``(usable files, quarantined files)``; together they hold each distinct input path once.
    """
    if min_duration_s < 0:
        raise ValueError(f"min_duration_s must be >= 0, got {min_duration_s}")
    unique = list(dict.fromkeys(Path(p).absolute() for p in paths))
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(unique) <= 1:
        results = [examine(path, min_duration_s, decode) for path in unique]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan-audio") as pool:
            results = list(pool.map(lambda path: examine(path, min_duration_s, decode), unique))
    ok = [r for r in results if isinstance(r, AudioFile)]
    bad = [r for r in results if isinstance(r, QuarantineRecord)]
    return ok, bad


def quarantine_frame(records: Sequence[QuarantineRecord]) -> pd.DataFrame:
    """Records as a DataFrame with :data:`QUARANTINE_COLUMNS` (``size_bytes`` nullable Int64), sorted by path."""
    frame = pd.DataFrame(
        {
            "path": pd.Series([r.path for r in records], dtype=object),
            "reason": pd.Series([r.reason for r in records], dtype=object),
            "detail": pd.Series([r.detail for r in records], dtype=object),
            "size_bytes": pd.array([r.size_bytes for r in records], dtype="Int64"),
            "sha256": pd.Series([r.sha256 for r in records], dtype=object),
        }
    )
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def write_quarantine(records: Sequence[QuarantineRecord], path: str | Path) -> Path:
    """Write records as parquet (columns :data:`QUARANTINE_COLUMNS`), atomically (:mod:`birdassets.atomic`)."""
    table = pa.Table.from_pandas(quarantine_frame(records), schema=_QUARANTINE_SCHEMA, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_quarantine(path: str | Path) -> list[QuarantineRecord]:
    """Records written by :func:`write_quarantine`."""
    frame = pq.read_table(path).to_pandas()
    return [
        QuarantineRecord(
            path=row.path,
            reason=row.reason,
            detail=row.detail,
            size_bytes=None if pd.isna(row.size_bytes) else int(row.size_bytes),
            sha256=None if row.sha256 is None or pd.isna(row.sha256) else str(row.sha256),
        )
        for row in frame.itertuples(index=False)
    ]


@dataclass(frozen=True)
class IngestResult:
    """What a source found: the manifest of usable files, and every file it could not use.

    Attributes:
        manifest: rows of the usable files (a file may have several rows: labelled segments).
        quarantine: one record per distinct unusable file, sorted by path.
        found: distinct files the source found (folder: files with an audio extension; table-driven
            sources: distinct files its tables reference).
        ignored: files the source saw but does not consider audio (folder: other extensions); they
            are neither found nor quarantined, only counted here so nothing disappears unreported.
    """

    manifest: Manifest
    quarantine: tuple[QuarantineRecord, ...]
    found: int
    ignored: int = 0

    @property
    def ingested(self) -> int:
        """Distinct files in the manifest."""
        return int(self.manifest.table["path"].nunique())

    @property
    def reconciles(self) -> bool:
        """``found == ingested + len(quarantine)`` and no file is both ingested and quarantined."""
        quarantined = {r.path for r in self.quarantine}
        overlap = quarantined & set(self.manifest.table["path"])
        distinct = len(quarantined) == len(self.quarantine)
        return not overlap and distinct and self.found == self.ingested + len(quarantined)

    def check(self) -> IngestResult:
        """Return ``self``, or raise :class:`ManifestError` with the numbers when the counts do not reconcile."""
        if not self.reconciles:
            quarantined = [r.path for r in self.quarantine]
            overlap = sorted(set(quarantined) & set(self.manifest.table["path"]))[:5]
            raise ManifestError(
                f"ingestion does not reconcile: found {self.found} files, ingested {self.ingested}, "
                f"quarantined {len(quarantined)} ({len(set(quarantined))} distinct); "
                f"both ingested and quarantined: {overlap}"
            )
        return self

    def reason_counts(self) -> dict[str, int]:
        """Quarantined files per reason, in :data:`REASONS` order, reasons with no file left out."""
        counts = Counter(r.reason for r in self.quarantine)
        return {reason: counts[reason] for reason in REASONS if counts[reason]}

    def quarantine_frame(self) -> pd.DataFrame:
        """The quarantine as a DataFrame (see :func:`quarantine_frame`)."""
        return quarantine_frame(self.quarantine)


def too_short_for(file: AudioFile, detail: str) -> QuarantineRecord:
    """Quarantine a usable file that is shorter than the segments a label table puts in it."""
    return QuarantineRecord(file.path, TOO_SHORT, detail, file.size_bytes, file.sha256)


def sorted_records(records: Iterable[QuarantineRecord]) -> tuple[QuarantineRecord, ...]:
    """Records sorted by path (the order :class:`IngestResult` keeps)."""
    return tuple(sorted(records, key=lambda r: r.path))


# ---------------------------------------------------------------------------- shared by table-driven sources


def unique_ids(ids: Iterable[str]) -> list[str]:
    """Make ids unique in order: the k-th repeat (k >= 2) of ``x`` becomes ``"x#k"``."""
    seen: dict[str, int] = {}
    taken: set[str] = set()
    out: list[str] = []
    for base in ids:
        count = seen.get(base, 0) + 1
        seen[base] = count
        candidate = base if count == 1 else f"{base}#{count}"
        while candidate in taken:  # "x#2" may itself be a literal id elsewhere
            count += 1
            seen[base] = count
            candidate = f"{base}#{count}"
        taken.add(candidate)
        out.append(candidate)
    return out



def manifest_from_rows(
    rows: list[dict], usable: dict[Path, AudioFile], classes: tuple[str, ...]
) -> Manifest:
    """Rows (with ``path``/``recording_id``, already unique) of usable files only, with their file facts."""
    kept = []
    for row in rows:
        fact = usable.get(row["path"])
        if fact is None:
            continue
        kept.append(
            {
                **{k: v for k, v in row.items() if not k.startswith("_")},
                "path": fact.path,
                "duration_s": fact.duration_s,
                "sample_rate": fact.sample_rate,
                "channels": fact.channels,
                "sha256": fact.sha256,
            }
        )
    return Manifest.from_rows(kept, classes=classes)


def ingest_rows(
    rows: list[dict],
    classes: tuple[str, ...] | None,
    min_duration_s: float,
    decode: Literal["full", "tail"],
    window_problem: Callable[[dict, AudioFile], str | None],
) -> IngestResult:
    """Rows of a label table (one per recording or labelled window) to an :class:`IngestResult`.

    Makes recording ids unique, checks every distinct file once (:func:`scan_audio`), and quarantines a usable
    file as ``too_short`` when ``window_problem(row, file)`` describes a test window its audio cannot hold.
    ``classes`` ``None``: the labels the rows use, sorted.
    """
    for row, recording_id in zip(rows, unique_ids(row["recording_id"] for row in rows)):
        row["recording_id"] = recording_id
    files = list(dict.fromkeys(row["path"] for row in rows))
    usable, quarantine = scan_audio(files, min_duration_s, decode=decode)
    by_path = {Path(f.path): f for f in usable}
    for row in rows:
        fact = by_path.get(row["path"])
        problem = window_problem(row, fact) if fact is not None and row["split"] == "test" else None
        if problem is not None:
            quarantine.append(too_short_for(fact, f"lasts {fact.duration_s:.3f} s but {row['_where']} {problem}"))
            del by_path[row["path"]]
    if classes is None:
        classes = tuple(sorted({label for row in rows for label in row["labels"]}))
    manifest = manifest_from_rows(rows, by_path, classes)
    return IngestResult(manifest, sorted_records(quarantine), found=len(files)).check()
