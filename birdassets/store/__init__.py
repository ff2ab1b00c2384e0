"""The metrics store: one DuckDB file holding every score with its lineage (Dagster-free).

- :mod:`.connection`  errors, opening with lock backoff, guarded readers, write transactions
- :mod:`.reads`       one reading statement per call: whole (``query_readonly``) or streamed in chunks
- :mod:`.schema`      tables and views (SQL)
- :mod:`.records`     what a write hands over: :class:`EvaluationRecord` and its rows
- :mod:`.validation`  checks run before the file is opened
- :mod:`.statements`  the SQL of each table write
- :mod:`.writers`     :class:`MetricsStore`: one transaction per write, plus ``query``
"""

from __future__ import annotations

from birdassets.lineage import Lineage
from birdassets.store.connection import (
    DEFAULT_LOCK_TIMEOUT_S,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreValidationError,
)
from birdassets.store.reads import SqlRefusedError, query_readonly, stream_query
from birdassets.store.records import CheckpointRow, DatasetRow, EvaluationRecord, RunRow
from birdassets.store.schema import SCHEMA_VERSION, SPLITS
from birdassets.store.validation import (
    CLASS_SCORE_COLUMNS,
    EPOCH_COLUMNS,
    QUARANTINE_FIELDS,
    SCORE_COLUMNS,
    SUBMISSION_SPEED_FIELDS,
    SUPERVISED_MODEL_FIELDS,
)
from birdassets.store.writers import MetricsStore

__all__ = [
    "CLASS_SCORE_COLUMNS",
    "DEFAULT_LOCK_TIMEOUT_S",
    "EPOCH_COLUMNS",
    "QUARANTINE_FIELDS",
    "SCHEMA_VERSION",
    "SCORE_COLUMNS",
    "SPLITS",
    "SUBMISSION_SPEED_FIELDS",
    "SUPERVISED_MODEL_FIELDS",
    "CheckpointRow",
    "DatasetRow",
    "EvaluationRecord",
    "Lineage",
    "MetricsStore",
    "RunRow",
    "SqlRefusedError",
    "StoreError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreValidationError",
    "query_readonly",
    "stream_query",
]
