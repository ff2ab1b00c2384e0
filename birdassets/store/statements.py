"""The SQL each metrics-store write runs, one function per table write, on an open transaction.

Every function takes the connection of a :func:`birdassets.store.connection.write_transaction`
(which commits or rolls back) and rows already checked by :mod:`.validation`; none opens, commits
or validates. ``now`` is the naive-UTC timestamp stamped on the rows. Frames are inserted through
one registered view, :data:`ROWS_IN`; NaN becomes NULL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from birdassets.lineage import Lineage
from birdassets.store.records import CheckpointRow, DatasetRow, EvaluationRecord, RunRow
from birdassets.store.validation import EXPORT_FIELDS, SUBMISSION_SPEED_FIELDS, SUPERVISED_MODEL_FIELDS  # the columns, defined once

ROWS_IN = "_birdassets_rows_in"
"""Name under which a frame being inserted is registered for one statement."""

UPSERT_DATASET = """
INSERT INTO datasets (task, source, root, manifest_hash, n_recordings, n_classes, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task) DO UPDATE SET
    source = excluded.source, root = excluded.root, manifest_hash = excluded.manifest_hash,
    n_recordings = excluded.n_recordings, n_classes = excluded.n_classes,
    updated_at = excluded.updated_at
"""

UPSERT_CHECKPOINT = """
INSERT INTO checkpoints (checkpoint, run, step, path, family, registered_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (checkpoint) DO UPDATE SET
    run = excluded.run, step = excluded.step, path = excluded.path,
    family = excluded.family, updated_at = excluded.updated_at
"""

UPSERT_RUN = """
INSERT INTO runs (run_id, kind, note, started_at, created_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET kind = excluded.kind, note = excluded.note
"""

INSERT_LINEAGE = """
INSERT INTO lineage (task, checkpoint, step, manifest_hash, preset_name, preset_hash, folds_hash,
    checkpoint_path, encoder_family, code_version, run_id, created_at, extra)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON)
"""

INSERT_SCORES = f"""
INSERT INTO scores (task, checkpoint, step, fold, split, probe, metric, value, n_classes_scored,
    run_id, created_at)
SELECT ?, ?, ?::BIGINT, fold, split, probe, metric,
    CASE WHEN isnan(value) THEN NULL ELSE value END,
    n_classes_scored, ?, ?
FROM {ROWS_IN}
"""

INSERT_CLASS_SCORES = f"""
INSERT INTO class_scores (task, checkpoint, step, fold, split, probe, class_name, support,
    n_negatives, ap, auc, run_id, created_at)
SELECT ?, ?, ?::BIGINT, fold, split, probe, class_name, support,
    CASE WHEN isnan(n_negatives) THEN NULL ELSE n_negatives END,
    CASE WHEN isnan(ap) THEN NULL ELSE ap END,
    CASE WHEN isnan(auc) THEN NULL ELSE auc END,
    ?, ?
FROM {ROWS_IN}
"""

def upsert_sql(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """``INSERT INTO table (key, columns, run_id, created_at) VALUES (?, ...)``, replacing the row of ``key``."""
    names = (*key, *columns, "run_id", "created_at")
    updates = ", ".join(f"{name} = excluded.{name}" for name in names[len(key):])
    return (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


UPSERT_SUPERVISED_MODEL = upsert_sql("supervised_models", ("task", "checkpoint"), tuple(SUPERVISED_MODEL_FIELDS))

INSERT_SUPERVISED_EPOCHS = f"""
INSERT INTO supervised_epochs (task, checkpoint, fold, epoch, train_loss, val_loss, val_auc, seconds,
    run_id, created_at)
SELECT ?, ?, fold, epoch,
    CASE WHEN isnan(train_loss) THEN NULL ELSE train_loss END,
    CASE WHEN isnan(val_loss) THEN NULL ELSE val_loss END,
    CASE WHEN isnan(val_auc) THEN NULL ELSE val_auc END,
    seconds, ?, ?
FROM {ROWS_IN}
"""

UPSERT_EXPORT = upsert_sql("exports", ("export_dir",), tuple(EXPORT_FIELDS))

UPSERT_SUBMISSION_SPEED = upsert_sql("submission_speed", ("task", "checkpoint"), tuple(SUBMISSION_SPEED_FIELDS))

INSERT_DETECTIONS = f"""
INSERT INTO detections (task, scorer, path, start_s, duration_s, confidence, local_prediction,
    run_id, created_at)
SELECT ?, ?, file, start_s, duration_s, confidence, local_prediction, ?, ? FROM {ROWS_IN}
"""

INSERT_DETECTION_FILES = f"""
INSERT INTO detection_files (task, scorer, path, duration_s, n_windows, n_positive,
    global_prediction, global_confidence, config, run_id, created_at)
SELECT ?, ?, path, duration_s, n_windows, n_positive, global_prediction, global_confidence,
    ?, ?, ? FROM {ROWS_IN}
"""

INSERT_QUARANTINE = f"""
INSERT INTO quarantine (task, path, reason, detail, size_bytes, sha256, found_at, run_id)
SELECT ?, path, reason, detail, size_bytes, sha256, found_at, ? FROM {ROWS_IN}
"""

EVALUATION_TABLES = ("class_scores", "scores", "lineage")
"""Tables holding rows keyed by (task, checkpoint), deleted before an evaluation is rewritten."""


def insert_frame(con: Any, frame: pd.DataFrame, sql: str, params: list[Any]) -> None:
    """Run ``sql`` (an INSERT ... SELECT ... FROM :data:`ROWS_IN`) over ``frame``; no-op if empty."""
    if not len(frame):
        return
    con.register(ROWS_IN, frame)
    con.execute(sql, params)
    con.unregister(ROWS_IN)


def upsert_dataset(con: Any, row: DatasetRow, now: datetime) -> None:
    """Insert or update the ``datasets`` row of ``row.task``."""
    con.execute(
        UPSERT_DATASET,
        [row.task, str(row.source), str(row.root), str(row.manifest_hash),
         int(row.n_recordings), int(row.n_classes), now],
    )


def upsert_checkpoint(con: Any, row: CheckpointRow, now: datetime) -> None:
    """Insert or update the ``checkpoints`` row; ``registered_at`` keeps the first time."""
    step = None if row.step is None else int(row.step)
    con.execute(
        UPSERT_CHECKPOINT,
        [row.checkpoint, str(row.run), step, str(row.path), str(row.family), now, now],
    )


def upsert_run(con: Any, row: RunRow, now: datetime) -> None:
    """Insert the ``runs`` row (or update its kind/note, keeping ``started_at``)."""
    con.execute(UPSERT_RUN, [row.run_id, str(row.kind), str(row.note), now, now])


def replace_evaluation(
    con: Any, lineage: Lineage, scores: pd.DataFrame, class_scores: pd.DataFrame, now: datetime
) -> None:
    """Delete the (task, checkpoint) rows of :data:`EVALUATION_TABLES`, insert these.

    ``scores``/``class_scores``: frames from :func:`.validation.prepare_scores` /
    :func:`.validation.prepare_class_scores`.
    """
    key = [lineage.task, lineage.checkpoint]
    step = None if lineage.step is None else int(lineage.step)
    for table in EVALUATION_TABLES:
        con.execute(f"DELETE FROM {table} WHERE task = ? AND checkpoint = ?", key)
    con.execute(
        INSERT_LINEAGE,
        [*key, step, lineage.manifest_hash, lineage.preset_name, lineage.preset_hash,
         lineage.folds_hash, lineage.checkpoint_path, lineage.encoder_family,
         lineage.code_version, lineage.run_id, now, lineage.extra_json()],
    )
    insert_frame(con, scores, INSERT_SCORES, [*key, step, lineage.run_id, now])
    insert_frame(con, class_scores, INSERT_CLASS_SCORES, [*key, step, lineage.run_id, now])


def write_record(
    con: Any, record: EvaluationRecord, scores: pd.DataFrame, class_scores: pd.DataFrame, now: datetime
) -> None:
    """Upsert the record's ``datasets``/``checkpoints``/``runs`` rows, replace its evaluation rows."""
    upsert_dataset(con, record.dataset, now)
    upsert_checkpoint(con, record.checkpoint, now)
    upsert_run(con, record.run, now)
    replace_evaluation(con, record.lineage, scores, class_scores, now)


def replace_supervised_model(
    con: Any, lineage: Lineage, model: dict[str, Any], epochs: pd.DataFrame, now: datetime
) -> None:
    """Upsert the ``supervised_models`` row of (task, checkpoint); make its ``supervised_epochs`` rows these.

    ``model``: the fields of :data:`.validation.SUPERVISED_MODEL_FIELDS`; ``epochs``: from
    :func:`.validation.prepare_epochs`.
    """
    key = [lineage.task, lineage.checkpoint]
    values = [model[name] for name in SUPERVISED_MODEL_FIELDS]
    con.execute(UPSERT_SUPERVISED_MODEL, [*key, *values, lineage.run_id, now])
    con.execute("DELETE FROM supervised_epochs WHERE task = ? AND checkpoint = ?", key)
    insert_frame(con, epochs, INSERT_SUPERVISED_EPOCHS, [*key, lineage.run_id, now])


def upsert_submission_speed(
    con: Any, task: str, checkpoint: str, row: dict[str, Any], run_id: str, now: datetime
) -> None:
    """Insert or replace the ``submission_speed`` row of (task, checkpoint) (fields of
    :data:`.validation.SUBMISSION_SPEED_FIELDS`)."""
    values = [row[name] for name in SUBMISSION_SPEED_FIELDS]
    con.execute(UPSERT_SUBMISSION_SPEED, [task, checkpoint, *values, run_id, now])


def upsert_export(con: Any, export_dir: str, row: dict[str, Any], run_id: str, now: datetime) -> None:
    """Insert or replace the ``exports`` row of ``export_dir`` (fields of :data:`.validation.EXPORT_FIELDS`)."""
    con.execute(UPSERT_EXPORT, [export_dir, *[row[name] for name in EXPORT_FIELDS], run_id, now])


def replace_detections(
    con: Any, task: str, scorer: str, windows: pd.DataFrame, files: pd.DataFrame, config: str,
    run_id: str, now: datetime,
) -> None:
    """Make the ``detections``/``detection_files`` rows of (task, scorer) these.

    ``windows``: one row per window (``file``, ``start_s``, ``duration_s``, ``confidence``,
    ``local_prediction``); ``files``: one row per file; ``config``: the decision rule as JSON.
    """
    for table in ("detections", "detection_files"):
        con.execute(f"DELETE FROM {table} WHERE task = ? AND scorer = ?", [task, scorer])
    insert_frame(con, windows, INSERT_DETECTIONS, [task, scorer, run_id, now])
    insert_frame(con, files, INSERT_DETECTION_FILES, [task, scorer, config, run_id, now])


def _quarantine_frame(rows: list[dict[str, Any]], first_seen: dict, now: datetime) -> pd.DataFrame:
    """``rows`` as a frame; ``found_at`` from ``first_seen[(path, reason, sha256)]``, else now."""
    return pd.DataFrame(
        {
            "path": pd.Series([row["path"] for row in rows], dtype=object),
            "reason": pd.Series([row["reason"] for row in rows], dtype=object),
            "detail": pd.Series([row["detail"] for row in rows], dtype=object),
            "size_bytes": pd.array([row["size_bytes"] for row in rows], dtype="Int64"),
            "sha256": pd.Series([row["sha256"] for row in rows], dtype=object),
            "found_at": pd.to_datetime(
                [first_seen.get((row["path"], row["reason"], row["sha256"]), now) for row in rows]
            ),
        }
    )


def replace_quarantine(
    con: Any, task: str, rows: list[dict[str, Any]], run_id: str, now: datetime
) -> None:
    """Make the ``quarantine`` rows of ``task`` these (from :func:`.validation.prepare_quarantine`).

    ``found_at`` is kept from the previous row of the same path, reason and sha256.
    """
    previous = con.execute(
        "SELECT path, reason, sha256, found_at FROM quarantine WHERE task = ?", [task]
    ).fetchall()
    first_seen = {(path, reason, digest): found for path, reason, digest, found in previous}
    frame = _quarantine_frame(rows, first_seen, now)
    con.execute("DELETE FROM quarantine WHERE task = ?", [task])
    insert_frame(con, frame, INSERT_QUARANTINE, [task, run_id])
