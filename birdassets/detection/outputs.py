"""Detection files: one JSON document, or a CSV table with one row per window, each published atomically.

The JSON document is :meth:`DetectionResult.to_dict` (scorer, config, one entry per recording with its
``segments``, unreadable files); the CSV is :meth:`DetectionResult.windows_frame` (columns
:data:`WINDOW_COLUMNS`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from birdassets.atomic import write_text

if TYPE_CHECKING:
    from birdassets.detection.rule import DetectionResult

WINDOW_COLUMNS = ["file", "start_s", "duration_s", "confidence", "local_prediction", "global_prediction",
                  "global_confidence"]
"""Columns of the one-row-per-window table (CSV export, DuckDB ``detections``)."""
EXPORT_SUFFIXES = (".json", ".csv")
"""The file types detections are exported as."""


def write_detections(result: DetectionResult, path: str | Path) -> Path:
    """Write ``result`` as JSON (``.json``) or one-row-per-window CSV (``.csv``) atomically; returns ``path``.

    Raises:
        ValueError: any other suffix (the message names the file).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        text = result.windows_frame().to_csv(index=False)
    elif path.suffix.lower() == ".json":
        text = json.dumps(result.to_dict(), indent=1)
    else:
        raise ValueError(f"{path}: detections are written as {' or '.join(EXPORT_SUFFIXES)}")
    return write_text(path, text)
