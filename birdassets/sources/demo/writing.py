"""Writing a demo data set to disk in BirdCLEF layout: OGG encoding, the label tables, and the atomic publish.

Audio is OGG Vorbis (libsndfile compression level :data:`VORBIS_COMPRESSION_LEVEL`), 32 kHz mono. The OGG stream
serial number (random in libsndfile) is stamped to a value derived from the file name, so the same spec gives
byte-identical files (and identical sha256s in the manifest). Encoding runs on worker threads
(:class:`_BackgroundWriter`) while the next recording is synthesised.

:func:`generate` is idempotent (``.complete`` holding the spec's digest short-circuits it) and atomic: it fills a
fresh staging sibling folder, writes ``.complete`` last, and publishes the folder with
:func:`birdassets.atomic.publish_dir`, so a half-written data set is never visible at ``root``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import tempfile
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from birdassets.atomic import publish_dir, write_json, write_text
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
from birdassets.sources.demo.species import SITE_STREAM, DemoTaskSpec, SpeciesCall, resolve_task
from birdassets.sources.demo.synthesis import soundscape, train_recording, unlabelled_soundscape, window_species_plan
from birdassets.sources.ingest import IngestResult

COMPLETE_MARKER = ".complete"
"""File holding the spec's digest; written last, so its presence means the data set is whole."""
SPEC_FILE = "demo_spec.json"
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


class _BackgroundWriter:
    """Encodes OGG files on worker threads while the caller synthesises the next ones.

    libsndfile is called through cffi, which releases the GIL, so encoding overlaps synthesis. At most
    ``max_pending`` waveforms wait in memory; the first failure is re-raised.
    """

    def __init__(self, workers: int = 2, max_pending: int = 8):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-ogg")
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending

    def write(self, path: Path, audio: np.ndarray, sample_rate: int) -> None:
        self._pending.append(self._pool.submit(write_ogg, path, audio, sample_rate))
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()

    def __enter__(self) -> "_BackgroundWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------- data set


def _write_dataset(spec: DemoTaskSpec, root: Path) -> None:
    """Every file of the data set except ``.complete``, into ``root``."""
    with _BackgroundWriter() as writer:
        _write_train(spec, root, writer)
        _write_soundscapes(spec, root, writer)
        _write_unlabelled(spec, root, writer)
    write_json(root / SPEC_FILE, spec.record(), sort_keys=True)


def _write_train(spec: DemoTaskSpec, root: Path, writer: _BackgroundWriter) -> None:
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
    _write_csv(root / TRAIN_CSV, TRAIN_COLUMNS, rows)


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


def _write_soundscapes(spec: DemoTaskSpec, root: Path, writer: _BackgroundWriter) -> None:
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
    _write_csv(root / SOUNDSCAPE_CSV, SOUNDSCAPE_REQUIRED_COLUMNS, rows)


def _write_unlabelled(spec: DemoTaskSpec, root: Path, writer: _BackgroundWriter) -> None:
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
    _write_csv(root / SAMPLE_SUBMISSION_CSV, ("row_id", *codes), rows)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------------ API


def is_complete(root: str | Path, task: str | DemoTaskSpec) -> bool:
    """Whether ``root`` holds a finished data set of exactly this spec."""
    marker = Path(root) / COMPLETE_MARKER
    try:
        return marker.read_text().strip() == resolve_task(task).digest()
    except OSError:
        return False


def generate(task: str | DemoTaskSpec, root: str | Path) -> Path:
    """Write the task's data set to ``root`` (BirdCLEF layout) unless it is already there.

    Idempotent: returns at once when ``root/.complete`` holds this spec's digest. Otherwise writes into
    a fresh staging sibling directory and publishes it (replacing an older generated data set of another
    spec), so readers never see a half-written folder. Concurrent writers are safe: each has its own
    staging folder, and one that finds the data set already complete discards its copy.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists, is not empty and is not a generated data set.
    """
    spec = resolve_task(task)
    root = Path(root).absolute()
    if is_complete(root, spec):
        return root
    if root.exists() and any(root.iterdir()) and not (root / COMPLETE_MARKER).exists():
        raise FileExistsError(
            f"{root}: exists, is not empty and is not a generated demo data set; refusing to replace it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.staging-", dir=root.parent))
    try:
        _write_dataset(spec, staging)
        write_text(staging / COMPLETE_MARKER, spec.digest() + "\n")
        staging.chmod(0o755)
        if not is_complete(root, spec):  # else a concurrent writer finished first: keep theirs
            publish_dir(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def read_demo(task: str | DemoTaskSpec, root: str | Path, *, min_duration_s: float = 0.0) -> IngestResult:
    """:func:`generate` the task into ``root`` (if needed) and read it with :func:`read_birdclef`.

    Generated files are all usable, so the quarantine is empty unless files were damaged after
    generation (or are shorter than ``min_duration_s``; generated files last >= 2 s).
    """
    return read_birdclef(generate(task, root), min_duration_s=min_duration_s)
