"""What every demo layout shares on disk: the spec digest, the ``.complete`` marker, the atomic publish, background
encoding and CSV tables.

A generated data set is whole when ``root/.complete`` holds its spec's digest (:func:`record_digest` of the spec's
JSON record, also written as ``demo_spec.json``). :func:`publish_generated` fills a fresh staging sibling folder,
writes ``.complete`` last and publishes the folder with :func:`birdassets.atomic.publish_dir`, so a half-written data
set is never visible at ``root``; a data set already complete short-circuits it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from birdassets.atomic import publish_dir, write_text

COMPLETE_MARKER = ".complete"
"""File holding the spec's digest; written last, so its presence means the data set is whole."""
SPEC_FILE = "demo_spec.json"
"""The spec's JSON record, beside the data."""

Encoder = Callable[[Path, np.ndarray, int], None]
"""``encode(path, audio [samples] float32, sample_rate Hz)``: writes one audio file."""


def record_digest(record: dict) -> str:
    """sha256 hex of a spec's JSON record (keys sorted): what ``.complete`` holds."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def holds_digest(root: str | Path, digest: str) -> bool:
    """Whether ``root/.complete`` holds ``digest`` (a finished data set of exactly that spec)."""
    try:
        return (Path(root) / COMPLETE_MARKER).read_text().strip() == digest
    except OSError:
        return False


def publish_generated(root: str | Path, digest: str, fill: Callable[[Path], None]) -> Path:
    """Make ``root`` a finished data set of the spec whose digest is ``digest``, unless it already is.

    Idempotent: returns at once when ``root/.complete`` holds ``digest``. Otherwise ``fill(staging)`` writes every
    file but the marker into a fresh staging sibling folder, the marker is written last, and the folder replaces
    ``root`` (an older generated data set of another spec included). Concurrent writers are safe: each has its own
    staging folder, and one that finds the data set already complete discards its copy.

    Returns:
        ``root``, absolute.

    Raises:
        FileExistsError: ``root`` exists, is not empty and is not a generated data set.
    """
    root = Path(root).absolute()
    if holds_digest(root, digest):
        return root
    if root.exists() and any(root.iterdir()) and not (root / COMPLETE_MARKER).exists():
        raise FileExistsError(
            f"{root}: exists, is not empty and is not a generated demo data set; refusing to replace it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.staging-", dir=root.parent))
    try:
        fill(staging)
        write_text(staging / COMPLETE_MARKER, digest + "\n")
        staging.chmod(0o755)
        if not holds_digest(root, digest):  # else a concurrent writer finished first: keep theirs
            publish_dir(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


class BackgroundWriter:
    """Encodes audio files on worker threads while the caller synthesises the next ones.

    libsndfile is called through cffi, which releases the GIL, so encoding overlaps synthesis. At most
    ``max_pending`` waveforms wait in memory; the first failure is re-raised.
    """

    def __init__(self, encode: Encoder, workers: int = 2, max_pending: int = 8):
        self._encode = encode
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-audio")
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending

    def write(self, path: Path, audio: np.ndarray, sample_rate: int) -> None:
        self._pending.append(self._pool.submit(self._encode, path, audio, sample_rate))
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """A CSV table with a header row, ``\\n`` line ends (the same bytes on every platform)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
