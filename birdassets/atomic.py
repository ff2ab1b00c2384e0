"""Publishing files and folders atomically: a reader sees the old version or the new one, never half of one.

Every file birdassets publishes (parquet, npy/npz, JSON, CSV, TFDS folders, checkpoints' side files) goes through
this module. Content is written to a temporary sibling (same folder, so the final ``os.replace`` is a rename on
one file system), flushed to disk, and renamed over the target. A crash leaves at most a hidden
``.<stem>.<random>.tmp<suffix>`` file or a ``.<name>.<random>.incomplete`` folder behind, which no reader opens.
Folders are replaced with two renames (old aside, new in): a reader at that instant finds no folder, never part of
one.

Typical use::

    with atomic_path(out / "scores.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out / "lineage.json", record)
    with atomic_dir(out / "probes") as staging:     # a whole folder appears at once
        np.save(staging / "a.npy", a)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STAGING_SUFFIX = ".incomplete"
"""A folder being built next to its final place: ``.<name>.<random>.incomplete``."""


def _current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it process-wide)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()
"""What ``open(path, "w")`` would give (``mkstemp`` makes its files 0600)."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block succeeds.

    The parent folder is created. On an exception the temporary file is removed and ``path`` is untouched.
    The temporary name keeps the target's suffix (``.parquet``, ``.npz``), so writers that add or check a
    suffix behave as with the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, **dumps_kwargs: Any) -> Path:
    """Write ``value`` as indented JSON (NaN refused: it is not JSON) atomically; returns ``path``."""
    options = {"indent": 2, "allow_nan": False, **dumps_kwargs}
    return write_text(path, json.dumps(value, **options) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """A fresh staging folder beside ``path`` to fill; it becomes ``path`` when the block succeeds.

    Each call stages in a folder of its own (``.<name>.<random>.incomplete``), so concurrent writers never touch
    each other's work. With ``replace=False`` an existing ``path`` wins (content-addressed folders: a concurrent
    build that finished first is kept, and this one is dropped). On an exception the staging folder is removed
    and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=STAGING_SUFFIX))
    try:
        yield staging
        if replace or not path.exists():
            publish_dir(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(staging: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move a finished ``staging`` folder to ``path``, replacing what was there; returns ``path``.

    The old folder is moved aside before the new one moves in and deleted after, so a crash never leaves
    neither (at worst the old one under ``.<name>.old-<pid>``).
    """
    staging, path = Path(staging), Path(path)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
