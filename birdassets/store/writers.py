"""The metrics store: every write to the DuckDB file, each in one transaction, and read-only queries.

Typical use::

    store = MetricsStore(home / "birdassets.duckdb")
    store.record_evaluation(record)   # dataset, checkpoint, run, lineage, scores: one transaction
    store.record_supervised(record, model_row, epochs)   # ... + a supervised model and its epochs
    store.leaderboard()               # mean/std over folds

A write validates its input first (:mod:`.validation`; nothing is opened if it is rejected), then
runs its statements (:mod:`.statements`) in one :func:`.connection.write_transaction`: a failure
or a killed process leaves the database as it was. Schema: :mod:`.schema`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pandas as pd

from birdassets.lineage import Lineage
from birdassets.store import statements, validation
from birdassets.store.connection import DEFAULT_LOCK_TIMEOUT_S, ConnectionWrapper, utc_now, write_transaction
from birdassets.store.reads import Params, read_frame
from birdassets.store.records import CheckpointRow, DatasetRow, EvaluationRecord, RunRow


class MetricsStore:
    """Read/write access to one metrics database file (created on first write).

    Every method opens and closes its own connection; writes run in one transaction each.
    ``lock_timeout_s`` bounds how long opening waits, retrying with backoff, for another process
    to release the file (default :data:`.connection.DEFAULT_LOCK_TIMEOUT_S`).
    ``wrap_connection`` (see :data:`.connection.ConnectionWrapper`) replaces each read-write
    connection the writes use; None (the default) uses DuckDB's connection as is.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        wrap_connection: ConnectionWrapper | None = None,
    ) -> None:
        if lock_timeout_s < 0 or not math.isfinite(lock_timeout_s):
            raise ValueError(f"lock_timeout_s must be finite and >= 0, got {lock_timeout_s}")
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)
        self.wrap_connection = wrap_connection

    def __repr__(self) -> str:
        return f"MetricsStore({str(self.path)!r}, lock_timeout_s={self.lock_timeout_s:g})"

    def _transaction(self, what: str) -> AbstractContextManager[Any]:
        """A :func:`.connection.write_transaction` on this file; ``what`` names it in errors."""
        return write_transaction(
            self.path, what, lock_timeout_s=self.lock_timeout_s, wrap=self.wrap_connection
        )

    def ensure_schema(self) -> None:
        """Create the database file and every table/view if missing (idempotent)."""
        with self._transaction("creating the schema"):
            pass

    # ------------------------------------------------------------------ evaluations

    def record_evaluation(self, record: EvaluationRecord) -> int:
        """Write one evaluation whole: dataset, checkpoint, run, lineage, scores, class scores.

        Everything is validated first (as :meth:`write_evaluation` and the upserts do, plus: the
        rows' task, checkpoint and run_id equal the lineage's), then written in ONE transaction:
        the ``datasets``/``checkpoints``/``runs`` rows are upserted and the (task, checkpoint)'s
        ``lineage``/``scores``/``class_scores`` rows replaced. Re-recording replaces, never
        duplicates; a failure at any statement, or a killed process, leaves the database as it
        was. Returns the number of ``scores`` rows written.
        """
        where, scores, class_scores = validation.prepare_record(record, self.path)
        now = utc_now()
        with self._transaction(f"record_evaluation {where}") as con:
            statements.write_record(con, record, scores, class_scores, now)
        return len(scores)

    def record_supervised(self, record: EvaluationRecord, model_row: dict, epochs: pd.DataFrame) -> int:
        """Write one supervised model whole: its evaluation (as :meth:`record_evaluation`) and its
        ``supervised_models`` and ``supervised_epochs`` rows, in ONE transaction.

        ``model_row``: exactly the keys of :data:`.validation.SUPERVISED_MODEL_FIELDS` (task, checkpoint and
        run come from ``record.lineage``); ``epochs``: its training history, one row per (fold, epoch), columns
        :data:`.validation.EPOCH_COLUMNS`. Everything is validated before the file is opened; the model row is
        upserted and the (task, checkpoint)'s epoch rows replaced, so re-recording never duplicates. Returns
        the number of ``scores`` rows written.
        """
        where, scores, class_scores, model, history = validation.prepare_supervised(
            record, model_row, epochs, self.path
        )
        now = utc_now()
        with self._transaction(f"record_supervised {where}") as con:
            statements.write_record(con, record, scores, class_scores, now)
            statements.replace_supervised_model(con, record.lineage, model, history, now)
        return len(scores)

    def record_submission_speed(self, task: str, checkpoint: str, row: dict, run_id: str) -> None:
        """Insert or replace the ``submission_speed`` row of (task, checkpoint); ``row``: exactly the keys of
        :data:`.validation.SUBMISSION_SPEED_FIELDS` (audio seconds per second, projected seconds, ...)."""
        for value, name in ((task, "task"), (checkpoint, "checkpoint"), (run_id, "run_id")):
            validation.require_name(value, name, self.path)
        where = f"{self.path} [submission speed of task={task!r}, checkpoint={checkpoint!r}]"
        speed = validation.prepare_row(row, validation.SUBMISSION_SPEED_FIELDS, "row", where)
        with self._transaction(f"record_submission_speed {where}") as con:
            statements.upsert_submission_speed(con, task, checkpoint, speed, run_id, utc_now())

    def record_export(self, export_dir: str, row: dict, run_id: str) -> None:
        """Insert or replace the ``exports`` row of ``export_dir`` (exporting again replaces it); ``row``: exactly
        the keys of :data:`.validation.EXPORT_FIELDS`."""
        validation.require_name(run_id, "run_id", self.path)
        where = f"{self.path} [export {export_dir}]"
        checked = validation.prepare_row(row, validation.EXPORT_FIELDS, "row", where)
        with self._transaction(f"record_export {where}") as con:
            statements.upsert_export(con, export_dir, checked, run_id, utc_now())

    def write_evaluation(
        self, lineage: Lineage, scores: pd.DataFrame, class_scores: pd.DataFrame
    ) -> int:
        """Replace all rows of ``(lineage.task, lineage.checkpoint)`` with these; one transaction.

        ``scores``: one row per (fold, split, probe, metric) with columns :data:`SCORE_COLUMNS`;
        ``value`` must be finite, or NaN exactly when ``n_classes_scored == 0`` (stored as NULL).
        ``class_scores``: one row per (fold, split, probe, class_name) with columns
        :data:`CLASS_SCORE_COLUMNS` (+ optional ``n_negatives``); ``ap``/``auc`` in [0, 1] or
        NaN (stored as NULL). Rows of ``scores``/``class_scores``/``lineage`` for the pair are
        deleted and the new ones inserted in one transaction: re-running replaces, never
        duplicates, and a failure (e.g. a duplicate or NULL key caught by the database) leaves
        the previous rows untouched. Returns the number of ``scores`` rows written.
        """
        where, score_rows, class_rows = validation.prepare_evaluation(
            lineage, scores, class_scores, self.path
        )
        now = utc_now()
        with self._transaction(f"write_evaluation {where}") as con:
            statements.replace_evaluation(con, lineage, score_rows, class_rows, now)
        return len(score_rows)

    # ------------------------------------------------------------------ single rows

    def upsert_dataset(
        self,
        task: str,
        source: str,
        root: str | Path,
        manifest_hash: str,
        n_recordings: int,
        n_classes: int,
    ) -> None:
        """Insert or update the ``datasets`` row of ``task``."""
        row = DatasetRow(task, source, root, manifest_hash, n_recordings, n_classes)
        validation.check_dataset(row, self.path)
        with self._transaction(f"upsert_dataset {task!r}") as con:
            statements.upsert_dataset(con, row, utc_now())

    def upsert_checkpoint(
        self, checkpoint: str, run: str, step: int | None, path: str | Path, family: str
    ) -> None:
        """Insert or update the ``checkpoints`` row; ``registered_at`` keeps the first time."""
        row = CheckpointRow(checkpoint, run, step, path, family)
        validation.check_checkpoint(row, self.path)
        with self._transaction(f"upsert_checkpoint {checkpoint!r}") as con:
            statements.upsert_checkpoint(con, row, utc_now())

    def record_run(self, run_id: str, kind: str, note: str = "") -> None:
        """Insert the ``runs`` row of ``run_id`` (or update its kind/note, keeping started_at)."""
        row = RunRow(run_id, kind, note)
        validation.check_run(row, self.path)
        with self._transaction(f"record_run {run_id!r}") as con:
            statements.upsert_run(con, row, utc_now())

    # ------------------------------------------------------------------ per-task tables

    def replace_detections(self, task: str, result: Any, run_id: str) -> int:
        """Make the detections of ``(task, result.scorer)`` exactly ``result``'s; one transaction.

        ``result``: a :class:`birdassets.detection.rule.DetectionResult`. Rows of that task and scorer are deleted
        and rewritten, so re-running never duplicates (another scorer's rows are kept). Returns the
        number of window rows written.
        """
        validation.require_name(task, "task", self.path)
        validation.require_name(run_id, "run_id", self.path)
        where = f"{self.path} [detections of task={task!r}, scorer={result.scorer!r}]"
        now = utc_now()
        windows = result.windows_frame()
        files = _detection_files(result)
        config = json.dumps(dataclasses.asdict(result.config))
        with self._transaction(f"replace_detections {where}") as con:
            statements.replace_detections(
                con, task, result.scorer, windows, files, config, run_id, now
            )
        return len(windows)

    def replace_quarantine(self, task: str, records: Iterable[Any], run_id: str) -> int:
        """Make the ``quarantine`` rows of ``task`` exactly ``records``; one transaction.

        ``records``: objects with ``path``, ``reason``, ``detail``, ``size_bytes`` (int >= 0 or
        None) and ``sha256`` (hex or None) attributes, one per path (e.g.
        :class:`birdassets.sources.ingest.QuarantineRecord`). The task's previous rows are deleted
        and these inserted in the same transaction, so re-running never duplicates and a failure
        leaves the previous rows. ``found_at`` is kept from the previous row of the same path when
        its reason and sha256 are unchanged (first time seen), else it is now; ``run_id`` is always
        this run. Returns the number of rows written.
        """
        validation.require_name(task, "task", self.path)
        validation.require_name(run_id, "run_id", self.path)
        where = f"{self.path} [quarantine of task={task!r}]"
        rows = validation.prepare_quarantine(records, where)
        now = utc_now()
        with self._transaction(f"replace_quarantine {where}") as con:
            statements.replace_quarantine(con, task, rows, run_id, now)
        return len(rows)

    # ------------------------------------------------------------------ reads

    def query(self, sql: str, params: Params = None) -> pd.DataFrame:
        """Run ``sql`` on a read-only connection (writes are rejected); result as a DataFrame.

        Raises :class:`StoreNotFoundError` before the first write created the file.
        """
        return read_frame(self.path, sql, params, self.lock_timeout_s)

    def leaderboard(self) -> pd.DataFrame:
        """The ``leaderboard`` view, best mean first within each task/split/metric/probe."""
        return self.query(
            "SELECT * FROM leaderboard "
            "ORDER BY task, split, metric, probe, mean DESC NULLS LAST, checkpoint"
        )


def _detection_files(result: Any) -> pd.DataFrame:
    """One row per recording of a detection result: duration, window counts, global decision."""
    return pd.DataFrame(
        {
            "path": [r.file for r in result.recordings],
            "duration_s": [r.duration_s for r in result.recordings],
            "n_windows": [len(r.start_s) for r in result.recordings],
            "n_positive": [int(r.local_predictions.sum()) for r in result.recordings],
            "global_prediction": [r.global_prediction for r in result.recordings],
            "global_confidence": [r.global_confidence for r in result.recordings],
        }
    )
