"""Rendering a query result for a terminal: an aligned table, CSV or JSON (``format_frame``).

Commands import it inside their functions: ``birdassets --help`` needs no pandas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal

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


def _format_table(frame: pd.DataFrame) -> str:
    headers = [str(c) for c in frame.columns]
    columns = [[_table_cell(v) for v in frame[c].tolist()] for c in frame.columns]
    right = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        for c in frame.columns
    ]
    widths = [max([len(h), *map(len, cells)]) for h, cells in zip(headers, columns, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    lines = [line(headers), line(["-" * w for w in widths])]
    lines.extend(line(row) for row in zip(*columns, strict=True))
    lines.append(f"({len(frame)} row{'s' if len(frame) != 1 else ''})")
    return "\n".join(lines)


def format_frame(frame: pd.DataFrame, fmt: Literal["table", "csv", "json"]) -> str:
    """Render a query result.

    ``table``: aligned plain text (numbers right-aligned, floats with 4 decimals, missing floats
    ``NaN``, other missing ``NULL``) followed by a row count; ``csv``: header + rows, full float
    precision, missing as empty fields; ``json``: a list of records, NaN/NULL as ``null`` and
    timestamps as ISO-8601 strings.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"format_frame needs a pandas DataFrame, got {type(frame).__name__}")
    if fmt == "table":
        return _format_table(frame)
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        records = [
            {str(c): _json_value(v) for c, v in zip(frame.columns, row, strict=True)}
            for row in frame.itertuples(index=False, name=None)
        ]
        return json.dumps(records, allow_nan=False, ensure_ascii=False)
    raise ValueError(f"unknown format {fmt!r}; expected one of 'table', 'csv', 'json'")
