"""The metrics store: one DuckDB file holding every score with its lineage (Dagster-free).

See :mod:`birdassets.store.store` for the single-writer discipline and
:mod:`birdassets.store.schema` for the tables and views.
"""

from __future__ import annotations

from birdassets.store.schema import SCHEMA_VERSION, SPLITS
from birdassets.store.store import (
    CLASS_SCORE_COLUMNS,
    QUARANTINE_FIELDS,
    SCORE_COLUMNS,
    Lineage,
    MetricsStore,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreValidationError,
    format_frame,
    query_readonly,
)

__all__ = [
    "CLASS_SCORE_COLUMNS",
    "QUARANTINE_FIELDS",
    "SCHEMA_VERSION",
    "SCORE_COLUMNS",
    "SPLITS",
    "Lineage",
    "MetricsStore",
    "StoreError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreValidationError",
    "format_frame",
    "query_readonly",
]
