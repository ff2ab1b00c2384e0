"""Rendering a query result for a terminal: an aligned table, CSV or JSON.

:func:`write_frames` writes a result chunk by chunk as it is fetched (``birdassets query``);
:func:`format_frame` renders one whole DataFrame.

Commands import it inside their functions: ``birdassets --help`` needs no pandas.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal, TextIO

import numpy as np
import pandas as pd


def _json_value(value: Any) -> Any:
    """A cell as a JSON-native value: NaN/NaT/None/inf -> None, timestamps -> ISO strings."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if value is pd.NaT or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, timedelta)):
        return pd.Timedelta(value).isoformat()
    if isinstance(value, str):
        return value
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    return str(value)


def _table_cell(value: Any) -> str:
    if value is None or value is pd.NaT:
        return "NULL"
    if isinstance(value, (float, np.floating)):
        return "NaN" if math.isnan(value) else f"{value:.4f}"
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return "NULL"
    return str(value)


def _right_aligned(frame: pd.DataFrame) -> list[bool]:
    """Per column: numbers (not booleans) are right-aligned."""
    return [
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        for dtype in frame.dtypes
    ]


def _cells(frame: pd.DataFrame) -> list[list[str]]:
    """The frame's cells as table text, one list per column (by position: names may repeat)."""
    return [[_table_cell(v) for v in frame.iloc[:, i].tolist()] for i in range(frame.shape[1])]


def _widen(widths: list[int], columns: list[list[str]]) -> None:
    widths[:] = [max([w, *map(len, cells)]) for w, cells in zip(widths, columns, strict=True)]


def _write_table(frames: Iterator[pd.DataFrame], out: TextIO) -> int:
    """Aligned columns under a header, then ``(N rows)``; returns N.

    Widths come from the header and the first frame (a whole result of up to
    :data:`birdassets.store.reads.CHUNK_ROWS` rows); a later, wider cell widens its column from
    there on.
    """
    first = next(frames)
    headers = [str(c) for c in first.columns]
    right = _right_aligned(first)
    widths = [len(h) for h in headers]
    first_cells = _cells(first)
    _widen(widths, first_cells)
    out.write(_table_line(headers, widths, right) + "\n")
    out.write(_table_line(["-" * w for w in widths], widths, right) + "\n")
    n = 0
    for columns in itertools.chain([first_cells], map(_cells, frames)):
        _widen(widths, columns)
        rows = list(zip(*columns, strict=True))
        out.writelines(_table_line(row, widths, right) + "\n" for row in rows)
        n += len(rows)
    out.write(f"({n} row{'s' if n != 1 else ''})\n")
    return n


def _table_line(cells: Sequence[str], widths: Sequence[int], right: Sequence[bool]) -> str:
    return "  ".join(
        cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(cells, widths, right, strict=True)
    ).rstrip()


def _write_csv(frames: Iterator[pd.DataFrame], out: TextIO) -> int:
    """A header line, then one line per row (full float precision, missing as empty fields)."""
    n = 0
    for i, frame in enumerate(frames):
        out.write(frame.to_csv(index=False, header=i == 0, lineterminator="\n"))
        n += len(frame)
    return n


def _write_json(frames: Iterator[pd.DataFrame], out: TextIO) -> int:
    """A JSON list of records, one per line; NaN/NULL as ``null``, timestamps as ISO-8601."""
    n = 0
    out.write("[")
    for frame in frames:
        names = [str(c) for c in frame.columns]
        for row in frame.itertuples(index=False, name=None):
            record = {c: _json_value(v) for c, v in zip(names, row, strict=True)}
            out.write(("," if n else "") + "\n" + json.dumps(record, allow_nan=False, ensure_ascii=False))
            n += 1
    out.write("\n]\n" if n else "]\n")
    return n


WRITERS = {"table": _write_table, "csv": _write_csv, "json": _write_json}
"""Each output format's writer: ``(frames, out) -> rows written``."""

Format = Literal["table", "csv", "json"]


def write_frames(frames: Iterable[pd.DataFrame], fmt: Format, out: TextIO) -> int:
    """Write the chunks of ONE result (same columns; at least one, maybe empty) as they come.

    Nothing is held back but the current chunk, so a result of any size streams through.
    ``table``: aligned plain text (numbers right-aligned, floats with 4 decimals, missing floats
    ``NaN``, other missing ``NULL``) followed by a row count; ``csv``: header + rows, full float
    precision, missing as empty fields; ``json``: a list of records, NaN/NULL as ``null`` and
    timestamps as ISO-8601 strings. Returns the number of rows written.
    """
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(map(repr, WRITERS))}")
    return WRITERS[fmt](iter(frames), out)


def format_frame(frame: pd.DataFrame, fmt: Format) -> str:
    """One whole result rendered as :func:`write_frames` writes it (without the final newline)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"format_frame needs a pandas DataFrame, got {type(frame).__name__}")
    buffer = io.StringIO()
    write_frames([frame], fmt, buffer)
    return buffer.getvalue().removesuffix("\n")
