"""Connections to the metrics database: errors, lock backoff, guarded readers, write transactions.

DuckDB allows ONE read-write process per file (or many read-only ones), so every store operation
opens its own short-lived connection, does all of its work, and closes it. Opening retries with
exponential backoff (capped at :data:`MAX_BACKOFF_S`) while another process holds the file lock
("Could not set lock on file ..."), for at most ``lock_timeout_s`` seconds (default
:data:`DEFAULT_LOCK_TIMEOUT_S`), then raises :class:`StoreLockedError` naming the file and the
holding process (its PID and program, from DuckDB's message). Readers open the file
``read_only=True`` with :data:`READER_CONFIG` and :data:`READER_LOCKING` (no file system, network
or extension access, no progress bar, settings locked), so they can modify neither this file nor
any other. A write runs in one :func:`write_transaction`, which also creates or upgrades the
schema (:mod:`.schema`). Reads themselves are in :mod:`.reads`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from birdassets.store import schema

DEFAULT_LOCK_TIMEOUT_S = 120.0
"""How long opening waits, by default, for another process to release the file (seconds)."""

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
"""The wait between two attempts to open a locked file doubles from FIRST_BACKOFF_S up to this."""

READER_CONFIG = {"enable_external_access": False}
"""DuckDB settings a read-only connection is opened with: no COPY/EXPORT/ATTACH/read_* of other
files, no extensions (:func:`guard_reader` then locks the configuration)."""

READER_LOCKING = ("SET enable_progress_bar = false", "SET lock_configuration = true")
"""Run on each new read-only connection: no progress bar drawn into the output of a long query,
then no ``SET``/``PRAGMA`` can change any setting (external access included) any more."""

_LOCK_HOLDER = re.compile(r"lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")

ConnectionWrapper = Callable[[duckdb.DuckDBPyConnection], Any]
"""Given a fresh read-write connection, returns what the writer uses in its place (an object with
the connection's ``execute``/``register``/``unregister``); tests wrap it to fail or pause at a
chosen statement."""


# --------------------------------------------------------------------------------- errors


class StoreError(RuntimeError):
    """A metrics-store operation failed; the message names the database file."""


class StoreLockedError(StoreError):
    """Another process held the database file's lock for longer than ``lock_timeout_s``.

    ``path`` is the file; ``holder_pid``/``holder_program`` name the holding process when DuckDB
    said (None otherwise).
    """

    def __init__(
        self, message: str, path: Path, holder_pid: int | None, holder_program: str | None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid
        self.holder_program = holder_program

    def __reduce__(self):  # picklable, as exceptions crossing process boundaries must be
        return type(self), (str(self), self.path, self.holder_pid, self.holder_program)


class StoreNotFoundError(StoreError, FileNotFoundError):
    """A read was asked of a database file that does not exist yet."""


class StoreValidationError(StoreError, ValueError):
    """Input to a write was rejected before touching the database."""


# -------------------------------------------------------------------------------- opening


def utc_now() -> datetime:
    """Now in UTC as a naive datetime (what a DuckDB ``TIMESTAMP`` column holds)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_lock_error(err: BaseException) -> bool:
    return isinstance(err, duckdb.IOException) and "lock" in str(err).lower()


def _locked(path: Path, attempts: int, lock_timeout_s: float, err: duckdb.Error) -> StoreLockedError:
    """The error after the last attempt: the file, the holder's PID and program, the time waited."""
    holder = _LOCK_HOLDER.search(str(err))
    pid = int(holder["pid"]) if holder else None
    program = holder["program"] if holder else None
    who = f", PID {pid} ({program})" if holder else f" (DuckDB said: {err})"
    return StoreLockedError(
        f"{path}: metrics database is locked by another process{who}; gave up after "
        f"{attempts} attempt(s) over {lock_timeout_s:g} s (lock_timeout_s). DuckDB lets one process "
        f"write a file or several read it, never both at once -- close that process's "
        f"connection or wait for it to finish, then retry",
        path,
        pid,
        program,
    )


def _connect_with_backoff(
    path: Path, read_only: bool, lock_timeout_s: float
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, retried with exponential backoff while another process holds the lock."""
    deadline = time.monotonic() + max(0.0, lock_timeout_s)
    backoff = FIRST_BACKOFF_S
    config = READER_CONFIG if read_only else {}
    attempts = 0
    while True:
        attempts += 1
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.Error as err:
            if not _is_lock_error(err):
                mode = "read-only" if read_only else "read-write"
                raise StoreError(f"{path}: cannot open metrics database ({mode}): {err}") from err
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _locked(path, attempts, lock_timeout_s, err) from err
            time.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def guard_reader(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``con`` (opened with :data:`READER_CONFIG`) with :data:`READER_LOCKING` applied.

    Another read-only connection of this process to the same file shares its database instance,
    whose configuration that connection has already locked: then there is nothing to do.
    """
    (locked,) = con.execute("SELECT current_setting('lock_configuration')").fetchone()
    if not locked:
        for statement in READER_LOCKING:
            try:
                con.execute(statement)
            except duckdb.InvalidInputException as err:  # in Jupyter without ipywidgets DuckDB refuses to touch
                if "progress bar" not in str(err):      # the progress bar setting (and draws none)
                    raise
    return con


def open_connection(
    path: Path, *, read_only: bool, lock_timeout_s: float
) -> duckdb.DuckDBPyConnection:
    """Open ``path``, retrying with exponential backoff while another process holds its lock.

    A read-only connection is opened with :data:`READER_CONFIG` and locked (:func:`guard_reader`).
    Raises :class:`StoreLockedError` once ``lock_timeout_s`` seconds have passed with the file
    still locked, :class:`StoreNotFoundError` for a read of a file that does not exist.
    """
    if read_only and not path.exists():
        raise StoreNotFoundError(
            f"{path}: metrics database does not exist yet (nothing has been written to it)"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect_with_backoff(path, read_only, lock_timeout_s)
    if not read_only:
        return con
    try:
        return guard_reader(con)
    except BaseException:
        con.close()
        raise


@contextmanager
def connection(
    path: Path, *, read_only: bool, lock_timeout_s: float
) -> Iterator[duckdb.DuckDBPyConnection]:
    """:func:`open_connection`, closed when the block ends."""
    con = open_connection(path, read_only=read_only, lock_timeout_s=lock_timeout_s)
    try:
        yield con
    finally:
        con.close()


# ---------------------------------------------------------------------------------- schema


def apply_schema(con: Any, path: Path) -> None:
    """Create or upgrade the schema inside the caller's transaction (idempotent)."""
    con.execute(schema.SCHEMA_VERSION_TABLE)
    (current,) = con.execute("SELECT max(version) FROM schema_version").fetchone()
    if current == schema.SCHEMA_VERSION:
        return
    if current is not None and current > schema.SCHEMA_VERSION:
        raise StoreError(
            f"{path}: database has schema version {current}, newer than this birdassets "
            f"(version {schema.SCHEMA_VERSION}); upgrade birdassets"
        )
    for statement in schema.SCHEMA_SQL:
        con.execute(statement)
    con.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
        [schema.SCHEMA_VERSION, utc_now()],
    )


# ---------------------------------------------------------------------------- transactions


@contextmanager
def write_transaction(
    path: Path, what: str, *, lock_timeout_s: float, wrap: ConnectionWrapper | None = None
) -> Iterator[Any]:
    """Read-write connection in BEGIN/COMMIT with the schema ensured; rolls back on any error.

    ``what`` names the operation in the error. A DuckDB error becomes a :class:`StoreError`
    saying nothing changed; any other exception is re-raised as is, after the rollback.
    ``wrap`` (see :data:`ConnectionWrapper`) replaces the connection the block sees.
    """
    with connection(path, read_only=False, lock_timeout_s=lock_timeout_s) as raw:
        con = raw if wrap is None else wrap(raw)
        try:
            con.execute("BEGIN TRANSACTION")
            apply_schema(con, path)
            yield con
            con.execute("COMMIT")
        except BaseException as err:
            try:
                raw.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the transaction was already aborted; nothing was committed
            if isinstance(err, duckdb.Error):
                raise StoreError(
                    f"{path}: {what} failed and was rolled back (nothing changed): {err}"
                ) from err
            raise
