"""Connections to the metrics database: errors, lock backoff, read-only reads, write transactions.

DuckDB allows ONE read-write process per file (or many read-only ones), so every store operation
opens its own short-lived connection, does all of its work, and closes it. Opening retries with
exponential backoff while another process holds the file lock ("Could not set lock on file ..."),
for at most ``lock_timeout_s`` seconds, then raises :class:`StoreLockedError` naming the file.
Readers open the file ``read_only=True``, so they can never modify it. A write runs in one
:func:`write_transaction`, which also creates or upgrades the schema (:mod:`.schema`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from birdassets.store import schema

_MAX_BACKOFF_S = 1.0
_FIRST_BACKOFF_S = 0.05

Params = Sequence[Any] | dict | None
"""Parameters of one SQL statement: positional (``?``) or named (``$name``), or none."""

ConnectionWrapper = Callable[[duckdb.DuckDBPyConnection], Any]
"""Given a fresh read-write connection, returns what the writer uses in its place (an object with
the connection's ``execute``/``register``/``unregister``); tests wrap it to fail or pause at a
chosen statement."""


# --------------------------------------------------------------------------------- errors


class StoreError(RuntimeError):
    """A metrics-store operation failed; the message names the database file."""


class StoreLockedError(StoreError):
    """Another process held the database file's lock for longer than ``lock_timeout_s``."""


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
    return StoreLockedError(
        f"{path}: metrics database is locked by another process; gave up after "
        f"{attempts} attempt(s) over {lock_timeout_s:g} s (lock_timeout_s). Only one "
        f"process may write at a time -- limit the 'duckdb' pool to 1 or close other "
        f"connections. DuckDB said: {err}"
    )


def open_connection(
    path: Path, *, read_only: bool, lock_timeout_s: float
) -> duckdb.DuckDBPyConnection:
    """Open ``path``, retrying with exponential backoff while another process holds its lock."""
    if read_only and not path.exists():
        raise StoreNotFoundError(
            f"{path}: metrics database does not exist yet (nothing has been written to it)"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(0.0, lock_timeout_s)
    backoff = _FIRST_BACKOFF_S
    attempts = 0
    while True:
        attempts += 1
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as err:
            if not _is_lock_error(err):
                mode = "read-only" if read_only else "read-write"
                raise StoreError(f"{path}: cannot open metrics database ({mode}): {err}") from err
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _locked(path, attempts, lock_timeout_s, err) from err
            time.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)


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


# ----------------------------------------------------------------------------------- reads


def read_frame(path: Path, sql: str, params: Params, lock_timeout_s: float) -> pd.DataFrame:
    """Result of ``sql`` on ``path`` opened read-only, as a DataFrame; errors name the file."""
    with connection(path, read_only=True, lock_timeout_s=lock_timeout_s) as con:
        try:
            result = con.execute(sql, params) if params is not None else con.execute(sql)
        except duckdb.Error as err:
            raise StoreError(f"{path}: read-only query failed: {err}\nSQL: {sql}") from err
        if result is None or result.description is None:  # e.g. only a comment: no result set
            raise StoreError(f"{path}: the query returned no result set (nothing to show)\nSQL: {sql}")
        return result.df()


def query_readonly(
    path: str | Path, sql: str, params: Params = None, *, lock_timeout_s: float = 60.0
) -> pd.DataFrame:
    """Run ``sql`` on the database at ``path`` opened read-only; writes are rejected.

    Raises :class:`StoreNotFoundError` if the file does not exist, :class:`StoreError` if DuckDB
    rejects the statement (including any attempt to modify the database).
    """
    return read_frame(Path(path), sql, params, lock_timeout_s)
