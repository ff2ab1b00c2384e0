"""Writing a demo data set to disk in BirdCLEF layout (OGG encoding, the label tables), and the demo's entry points.

Audio is OGG Vorbis (libsndfile compression level :data:`VORBIS_COMPRESSION_LEVEL`), 32 kHz mono. The OGG stream
serial number (random in libsndfile) is stamped to a value derived from the file name, so the same spec gives
byte-identical files (and identical sha256s in the manifest). Encoding runs on worker threads
(:class:`~birdassets.sources.demo.publishing.BackgroundWriter`) while the next recording is synthesised.

:func:`generate`, :func:`is_complete` and :func:`read_demo` take any built-in demo data set: a BirdCLEF-layout task
(:data:`~birdassets.sources.demo.species.DEMO_TASKS`) or the hydrophone clips of ``demo-orca``
(:data:`~birdassets.sources.demo.orca_clips.ORCA_TASKS`, written by :mod:`~birdassets.sources.demo.orca_clips`).
:func:`generate` is idempotent (``.complete`` holding the spec's digest short-circuits it) and atomic
(:func:`~birdassets.sources.demo.publishing.publish_generated`): a half-written data set is never visible at ``root``.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from birdassets.atomic import write_json
from birdassets.sources.birdclef import (
    SAMPLE_SUBMISSION_CSV,
    SOUNDSCAPE_CSV,
    SOUNDSCAPE_DIR,
    SOUNDSCAPE_REQUIRED_COLUMNS,
    TRAIN_AUDIO_DIR,
    TRAIN_CSV,
    UNLABELLED_SOUNDSCAPE_DIR,
    read_birdclef,
    submission_row_id,
)
from birdassets.sources.clips import read_clips
from birdassets.sources.demo.orca_clips import ORCA_TASKS, OrcaDemoSpec, write_orca_dataset
from birdassets.sources.demo.publishing import SPEC_FILE, BackgroundWriter, holds_digest, publish_generated, write_csv
from birdassets.sources.demo.species import DEMO_TASKS, SITE_STREAM, DemoTaskSpec, SpeciesCall, resolve_task
from birdassets.sources.demo.synthesis import soundscape, train_recording, unlabelled_soundscape, window_species_plan
from birdassets.sources.ingest import IngestResult

DemoSpec = DemoTaskSpec | OrcaDemoSpec
"""Any built-in kind of demo data set: BirdCLEF layout, or hydrophone clips."""

TRAIN_COLUMNS: tuple[str, ...] = (
    "primary_label",
    "secondary_labels",
    "type",
    "filename",
    "collection",
    "rating",
    "url",
    "latitude",
    "longitude",
    "scientific_name",
    "common_name",
    "author",
    "license",
)
VORBIS_COMPRESSION_LEVEL = 0.3  # libsndfile 0 (best quality) .. 1; the default (~0.6) smears quiet noise near calls

_BIT_REVERSED = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ OGG


def _ogg_crc(page: bytes) -> int:
    """Ogg page CRC (poly 0x04C11DB7, MSB-first, init 0, no final xor) via zlib's reflected CRC-32."""
    reflected = zlib.crc32(_BIT_REVERSED[np.frombuffer(page, dtype=np.uint8)].tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def stamp_ogg_serial(data: bytes, serial: int) -> bytes:
    """Set every page's bitstream serial number to ``serial`` and fix the page CRCs.

    libsndfile draws the serial from the clock, which makes otherwise identical files differ.
    """
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        segments = out[pos + 26]
        length = 27 + segments + sum(out[pos + 27 : pos + 27 + segments])
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos : pos + length])).to_bytes(4, "little")
        pos += length
    return bytes(out)


def write_ogg(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float32 ``[samples]`` as OGG Vorbis with a serial number derived from the file name.

    Written in place: the files of a data set are published together, by :func:`generate`'s folder rename.
    """
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="OGG", subtype="VORBIS", compression_level=VORBIS_COMPRESSION_LEVEL)
    serial = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:4], "little")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stamp_ogg_serial(buffer.getvalue(), serial))


# ------------------------------------------------------------------------------------------- data set


def _write_dataset(spec: DemoTaskSpec, root: Path) -> None:
    """Every file of the data set except ``.complete``, into ``root``."""
    with BackgroundWriter(write_ogg) as writer:
        _write_train(spec, root, writer)
        _write_soundscapes(spec, root, writer)
        _write_unlabelled(spec, root, writer)
    write_json(root / SPEC_FILE, spec.record(), sort_keys=True)


def _write_train(spec: DemoTaskSpec, root: Path, writer: BackgroundWriter) -> None:
    """``train_audio/<code>/<code>_<nnn>.ogg`` focal recordings and their ``train.csv`` rows."""
    rows = []
    for s, call in enumerate(spec.species):
        site = spec.rng(SITE_STREAM, s)
        lat, lon = spec.latitude + site.uniform(-2, 2), spec.longitude + site.uniform(-3, 3)
        for r in range(spec.train_per_species):
            audio, background, snr_db = train_recording(spec, s, r)
            filename = f"{call.code}/{call.code}_{r:03d}.ogg"
            writer.write(root / TRAIN_AUDIO_DIR / filename, audio, spec.sample_rate)
            location = (lat + site.uniform(-0.2, 0.2), lon + site.uniform(-0.2, 0.2))
            rows.append(_train_row(call, filename, background, snr_db, location))
    write_csv(root / TRAIN_CSV, TRAIN_COLUMNS, rows)


def _train_row(
    call: SpeciesCall, filename: str, background: list[str], snr_db: float, location: tuple[float, float]
) -> dict[str, str]:
    """One ``train.csv`` row; the rating (1-5 in half stars) grows with the recording's SNR, dB."""
    return {
        "primary_label": call.code,
        "secondary_labels": repr(background),
        "type": repr([call.call_type]),
        "filename": filename,
        "collection": "DEMO",
        "rating": f"{float(np.clip(np.round(2 * (1 + 4 * (snr_db + 6) / 36)) / 2, 1, 5)):.1f}",
        "url": "",
        "latitude": f"{location[0]:.4f}",
        "longitude": f"{location[1]:.4f}",
        "scientific_name": call.scientific_name,
        "common_name": call.common_name,
        "author": "birdassets demo generator",
        "license": "CC0 1.0",
    }


def _write_soundscapes(spec: DemoTaskSpec, root: Path, writer: BackgroundWriter) -> None:
    """``test_soundscapes/<task>_sc<nnn>.ogg`` and ``soundscape_labels.csv`` (one row per 5-s window)."""
    windows = window_species_plan(spec)
    rows = []
    per_file = spec.windows_per_soundscape
    for f, first in enumerate(range(0, len(windows), per_file)):
        members = windows[first : first + per_file]
        name = f"{spec.name}_sc{f:03d}.ogg"
        writer.write(root / SOUNDSCAPE_DIR / name, soundscape(spec, f, members), spec.sample_rate)
        for w, species in enumerate(members):
            rows.append(
                {
                    "filename": name,
                    "start_s": f"{w * spec.window_s:.3f}",
                    "end_s": f"{(w + 1) * spec.window_s:.3f}",
                    "labels": " ".join(spec.species[i].code for i in species),
                }
            )
    write_csv(root / SOUNDSCAPE_CSV, SOUNDSCAPE_REQUIRED_COLUMNS, rows)


def _write_unlabelled(spec: DemoTaskSpec, root: Path, writer: BackgroundWriter) -> None:
    """``train_soundscapes/<task>_u<nnn>.ogg`` (no labels anywhere) and ``sample_submission.csv``: ``row_id`` =
    ``<stem>_<window end, whole s>`` for every window, then one all-zero column per species code, sorted (the
    task's class order)."""
    if spec.unlabelled_soundscapes == 0:
        return
    codes = sorted(call.code for call in spec.species)
    rows = []
    for u in range(spec.unlabelled_soundscapes):
        stem = f"{spec.name}_u{u:03d}"
        audio, _ = unlabelled_soundscape(spec, u)
        writer.write(root / UNLABELLED_SOUNDSCAPE_DIR / f"{stem}.ogg", audio, spec.sample_rate)
        for w in range(spec.unlabelled_windows):
            rows.append({"row_id": submission_row_id(stem, (w + 1) * spec.window_s), **dict.fromkeys(codes, "0")})
    write_csv(root / SAMPLE_SUBMISSION_CSV, ("row_id", *codes), rows)


# ------------------------------------------------------------------------------------------------ API


def resolve_demo(task: str | DemoSpec) -> DemoSpec:
    """A spec itself, or the built-in demo data set of that name (:data:`DEMO_TASKS` or :data:`ORCA_TASKS`)."""
    if isinstance(task, OrcaDemoSpec):
        return task
    if isinstance(task, str) and task in ORCA_TASKS:
        return ORCA_TASKS[task]
    if isinstance(task, DemoTaskSpec) or task in DEMO_TASKS:
        return resolve_task(task)
    raise KeyError(f"unknown demo task {task!r}; known: {sorted([*DEMO_TASKS, *ORCA_TASKS])}")


def is_complete(root: str | Path, task: str | DemoSpec) -> bool:
    """Whether ``root`` holds a finished data set of exactly this spec."""
    return holds_digest(root, resolve_demo(task).digest())


def generate(task: str | DemoSpec, root: str | Path) -> Path:
    """Write the task's data set to ``root`` unless it is already there: BirdCLEF layout for a
    :class:`DemoTaskSpec`, labelled hydrophone clips (:mod:`~birdassets.sources.demo.orca_clips`) for an
    :class:`OrcaDemoSpec`.

    Idempotent: returns at once when ``root/.complete`` holds this spec's digest. Otherwise writes into
    a fresh staging sibling directory and publishes it (replacing an older generated data set of another
    spec), so readers never see a half-written folder
    (:func:`~birdassets.sources.demo.publishing.publish_generated`).

    Returns:
        ``root``, absolute.

    Raises:
        FileExistsError: ``root`` exists, is not empty and is not a generated data set.
        KeyError: an unknown task name.
    """
    spec = resolve_demo(task)
    fill = write_orca_dataset if isinstance(spec, OrcaDemoSpec) else _write_dataset
    return publish_generated(root, spec.digest(), lambda staging: fill(spec, staging))


def read_demo(task: str | DemoSpec, root: str | Path, *, min_duration_s: float = 0.0) -> IngestResult:
    """:func:`generate` the task into ``root`` (if needed) and read it: with :func:`read_birdclef`, or with
    :func:`~birdassets.sources.clips.read_clips` for hydrophone clips (whose ``recordings/`` are not read).

    Generated files are all usable, so the quarantine is empty unless files were damaged after
    generation (or are shorter than ``min_duration_s``; generated files last >= 2 s).
    """
    spec = resolve_demo(task)
    root = generate(spec, root)
    if isinstance(spec, OrcaDemoSpec):
        return read_clips(root, min_duration_s=min_duration_s)
    return read_birdclef(root, min_duration_s=min_duration_s)
