"""Reading the metrics database: one reading statement, checked, run on a guarded connection.

Every read goes through here. The SQL is parsed first (:func:`single_statement`): exactly one
statement, of a reading kind (:data:`READING_STATEMENTS`), else :class:`SqlRefusedError` before the
file is opened. It then runs on a connection opened read-only with
:data:`.connection.READER_CONFIG` (no access to any other file, settings locked). The result comes
back whole as a DataFrame (:func:`read_frame`, :func:`query_readonly`), or as
:class:`ResultChunks`, DataFrames of at most :data:`CHUNK_ROWS` rows and a row limit
(:func:`stream_query`, what ``birdassets query`` prints), so a huge result never has to fit in
memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from birdassets.store.connection import DEFAULT_LOCK_TIMEOUT_S, StoreError, connection

Params = Sequence[Any] | dict | None
"""Parameters of one SQL statement: positional (``?``) or named (``$name``), or none."""

READING_STATEMENTS = {
    duckdb.StatementType.SELECT: "SELECT",  # also DESCRIBE, SHOW, SUMMARIZE, FROM-first queries
    duckdb.StatementType.EXPLAIN: "EXPLAIN",
    duckdb.StatementType.PRAGMA: "PRAGMA",  # e.g. PRAGMA table_info('scores'); PRAGMA x = y is a SET
    duckdb.StatementType.CALL: "CALL",
}
"""The kinds of statement a reader may run, with their names for messages."""

CHUNK_VECTORS = 8
CHUNK_ROWS = CHUNK_VECTORS * 2048
"""Rows per chunk of a streamed result (DuckDB vectors hold 2048 rows): a few MB for typical rows."""


class SqlRefusedError(StoreError):
    """SQL refused before it ran: empty, several statements, not a reading statement, or no result."""


def single_statement(sql: str, path: Path) -> str:
    """The text of the one reading statement in ``sql``; :class:`SqlRefusedError` otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise SqlRefusedError(f"{path}: cannot parse the SQL: {err}") from err
    if not statements:
        raise SqlRefusedError(
            f"{path}: no SQL statement given (the text is empty, blank or only comments), "
            f'e.g. "select * from leaderboard"'
        )
    if len(statements) > 1:
        raise SqlRefusedError(
            f"{path}: {len(statements)} statements given; a query runs ONE statement per call "
            f"(only the last result would show) -- run them one at a time"
        )
    (statement,) = statements
    if statement.type not in READING_STATEMENTS:
        raise SqlRefusedError(
            f"{path}: {statement.type.name} statements are refused: the metrics database is opened "
            f"read-only here, with no access to other files (allowed: "
            f"{', '.join(READING_STATEMENTS.values())})"
        )
    return statement.query


def _run(con: duckdb.DuckDBPyConnection, path: Path, statement: str, params: Params) -> Any:
    """``statement`` executed on ``con``; a DuckDB error becomes a :class:`StoreError` naming the file."""
    try:
        result = con.execute(statement, params) if params is not None else con.execute(statement)
    except duckdb.Error as err:
        hint = ""
        if isinstance(err, duckdb.PermissionException):
            hint = " (reads see only the tables and views of the metrics database)"
        raise StoreError(f"{path}: read-only query failed{hint}: {err}\nSQL: {statement}") from err
    if result is None or result.description is None:
        raise SqlRefusedError(f"{path}: the statement returned no result set (nothing to show)\nSQL: {statement}")
    return result


def _fetching(path: Path, fetch: Any, *args: Any) -> pd.DataFrame:
    """``fetch(*args)``; a DuckDB error or running out of memory becomes a :class:`StoreError`."""
    try:
        return fetch(*args)
    except duckdb.Error as err:
        raise StoreError(f"{path}: read-only query failed while fetching rows: {err}") from err
    except MemoryError as err:
        raise StoreError(
            f"{path}: out of memory while fetching rows; select fewer rows or columns "
            f"(LIMIT, WHERE, an aggregate)"
        ) from err


def read_frame(path: Path, sql: str, params: Params, lock_timeout_s: float) -> pd.DataFrame:
    """Result of the one statement ``sql`` on ``path`` opened read-only, whole, as a DataFrame."""
    statement = single_statement(sql, path)
    with connection(path, read_only=True, lock_timeout_s=lock_timeout_s) as con:
        result = _run(con, path, statement, params)
        return _fetching(path, result.df)


def query_readonly(
    path: str | Path, sql: str, params: Params = None, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> pd.DataFrame:
    """Run ``sql`` on the database at ``path`` opened read-only; writes are rejected.

    Raises :class:`StoreNotFoundError` if the file does not exist, :class:`SqlRefusedError` for
    anything but one reading statement, :class:`StoreError` if DuckDB rejects the statement
    (including any attempt to modify the database or to touch another file).
    """
    return read_frame(Path(path), sql, params, lock_timeout_s)


class ResultChunks:
    """The rows of one result as DataFrames of at most :data:`CHUNK_ROWS` rows, ``limit`` rows in all.

    Iterate once. The first chunk is yielded even when the result is empty (it carries the column
    names and dtypes). After the iteration, ``truncated`` says whether the result had more than
    ``limit`` rows (None: no limit). Rows are fetched only as the iteration asks for them.
    """

    def __init__(self, result: Any, path: Path, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be None or >= 1, got {limit}")
        self._result = result
        self._path = path
        self.limit = limit
        self.truncated = False

    def _fetch(self, vectors: int = CHUNK_VECTORS) -> pd.DataFrame:
        return _fetching(self._path, self._result.fetch_df_chunk, vectors)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        remaining = self.limit
        frame = self._fetch()
        while True:
            if remaining is not None and len(frame) > remaining:
                self.truncated = True
                yield frame.iloc[:remaining]
                return
            yield frame
            if frame.empty:
                return
            if remaining is not None:
                remaining -= len(frame)
                if remaining == 0:
                    self.truncated = not self._fetch(1).empty
                    return
            frame = self._fetch()
            if frame.empty:
                return


@contextmanager
def stream_query(
    path: str | Path, sql: str, *, limit: int | None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[ResultChunks]:
    """The result of the one reading statement ``sql``, in chunks; the file stays open until the block ends.

    ``limit``: at most this many rows (>= 1), or None for all. Refusals as :func:`query_readonly`.
    """
    path = Path(path)
    statement = single_statement(sql, path)
    with connection(path, read_only=True, lock_timeout_s=lock_timeout_s) as con:
        yield ResultChunks(_run(con, path, statement, None), path, limit)
