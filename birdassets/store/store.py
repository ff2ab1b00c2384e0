"""The birdassets metrics store: one DuckDB file holding every score with its lineage.

DuckDB allows ONE read-write process per file (or many read-only ones), so every method here
opens its own short-lived connection, does all of its work in one transaction, and closes it.
Opening retries with exponential backoff while another process holds the file lock
("Could not set lock on file ..."), for at most ``lock_timeout_s`` seconds, then raises
:class:`StoreLockedError` naming the file. Readers (:meth:`MetricsStore.query`,
:func:`query_readonly`) open the file ``read_only=True``, so they can never modify it.

Typical use::

    store = MetricsStore(home / "birdassets.duckdb")
    store.write_evaluation(lineage, scores, class_scores)   # replaces (task, checkpoint)
    store.leaderboard()                                      # mean/std over folds

Schema: :mod:`birdassets.store.schema`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from birdassets.store import schema

SCORE_COLUMNS = ("fold", "split", "probe", "metric", "value", "n_classes_scored")
"""Columns ``write_evaluation`` needs in its ``scores`` frame (others are ignored)."""

CLASS_SCORE_COLUMNS = ("fold", "split", "probe", "class_name", "support", "ap", "auc")
"""Columns ``write_evaluation`` needs in its ``class_scores`` frame; ``n_negatives`` is optional
(stored when present, as :func:`birdassets.metrics.per_class_scores` emits it); others are
ignored."""

QUARANTINE_FIELDS = ("path", "reason", "detail", "size_bytes", "sha256")
"""Attributes ``replace_quarantine`` reads from each record."""

_MAX_BACKOFF_S = 1.0
_FIRST_BACKOFF_S = 0.05


# --------------------------------------------------------------------------------- errors


class StoreError(RuntimeError):
    """A metrics-store operation failed; the message names the database file."""


class StoreLockedError(StoreError):
    """Another process held the database file's lock for longer than ``lock_timeout_s``."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """A read was asked of a database file that does not exist yet."""


class StoreValidationError(StoreError, ValueError):
    """Input to a write was rejected before touching the database."""


# -------------------------------------------------------------------------------- lineage


@dataclass(frozen=True)
class Lineage:
    """Everything that produced one (task, checkpoint) evaluation.

    ``step`` is the training step of the checkpoint (None for encoders without steps);
    ``*_hash`` are content hashes of the dataset manifest, frontend preset and fold assignment;
    ``run_id`` is the pipeline run that computed the scores; ``extra`` is free-form JSON-able
    context (seeds, probe configs, ...).
    """

    task: str
    checkpoint: str
    step: int | None
    manifest_hash: str
    preset_name: str
    preset_hash: str
    folds_hash: str
    checkpoint_path: str
    encoder_family: str
    code_version: str
    run_id: str
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("task", "checkpoint", "run_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise StoreValidationError(f"Lineage.{name} must be a non-empty str, got {value!r}")
        for name in (
            "manifest_hash",
            "preset_name",
            "preset_hash",
            "folds_hash",
            "checkpoint_path",
            "encoder_family",
            "code_version",
        ):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise StoreValidationError(
                    f"Lineage.{name} of {self.task}/{self.checkpoint} must be a str, got {value!r}"
                )
        if self.step is not None and (
            isinstance(self.step, (bool, np.bool_)) or not isinstance(self.step, (int, np.integer))
        ):
            raise StoreValidationError(
                f"Lineage.step of {self.task}/{self.checkpoint} must be an int or None, "
                f"got {self.step!r}"
            )
        if not isinstance(self.extra, dict):
            raise StoreValidationError(
                f"Lineage.extra of {self.task}/{self.checkpoint} must be a dict, "
                f"got {type(self.extra).__name__}"
            )
        self.extra_json()  # fail now, not inside the write transaction

    def extra_json(self) -> str:
        """``extra`` as canonical JSON (sorted keys); numpy scalars/arrays become numbers/lists."""
        try:
            return json.dumps(
                self.extra, sort_keys=True, allow_nan=False, default=_json_default_strict
            )
        except (TypeError, ValueError) as err:
            raise StoreValidationError(
                f"Lineage.extra of {self.task}/{self.checkpoint} is not JSON-serialisable: {err}"
            ) from err


def _json_default_strict(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


# ----------------------------------------------------------------------------- connection


def _utc_now() -> datetime:
    """Now in UTC as a naive datetime (what a DuckDB ``TIMESTAMP`` column holds)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_lock_error(err: BaseException) -> bool:
    return isinstance(err, duckdb.IOException) and "lock" in str(err).lower()


def _open(path: Path, *, read_only: bool, lock_timeout_s: float) -> duckdb.DuckDBPyConnection:
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
                raise StoreError(
                    f"{path}: cannot open metrics database "
                    f"({'read-only' if read_only else 'read-write'}): {err}"
                ) from err
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreLockedError(
                    f"{path}: metrics database is locked by another process; gave up after "
                    f"{attempts} attempt(s) over {lock_timeout_s:g} s (lock_timeout_s). Only one "
                    f"process may write at a time -- limit the 'duckdb' pool to 1 or close other "
                    f"connections. DuckDB said: {err}"
                ) from err
            time.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)


@contextmanager
def _connection(
    path: Path, *, read_only: bool, lock_timeout_s: float
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = _open(path, read_only=read_only, lock_timeout_s=lock_timeout_s)
    try:
        yield con
    finally:
        con.close()


def _apply_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
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
        [schema.SCHEMA_VERSION, _utc_now()],
    )


def _read(path: Path, sql: str, params: Sequence[Any] | dict | None, lock_timeout_s: float):
    with _connection(path, read_only=True, lock_timeout_s=lock_timeout_s) as con:
        try:
            result = con.execute(sql, params) if params is not None else con.execute(sql)
            return result.df()
        except duckdb.Error as err:
            raise StoreError(f"{path}: read-only query failed: {err}\nSQL: {sql}") from err


def query_readonly(
    path: str | Path,
    sql: str,
    params: Sequence[Any] | dict | None = None,
    *,
    lock_timeout_s: float = 60.0,
) -> pd.DataFrame:
    """Run ``sql`` on the database at ``path`` opened read-only; writes are rejected.

    Raises :class:`StoreNotFoundError` if the file does not exist, :class:`StoreError` if DuckDB
    rejects the statement (including any attempt to modify the database).
    """
    return _read(Path(path), sql, params, lock_timeout_s)


# ----------------------------------------------------------------------------- validation


def _require_frame(frame: object, columns: Sequence[str], what: str, where: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise StoreValidationError(f"{where}: {what} must be a pandas DataFrame, got {type(frame)}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StoreValidationError(
            f"{where}: {what} lacks column(s) {missing}; it has {list(map(str, frame.columns))}"
        )
    return frame


def _first_rows(frame: pd.DataFrame, mask: np.ndarray, columns: Sequence[str], n: int = 3) -> str:
    rows = frame.loc[mask, list(columns)].head(n)
    return "; ".join(
        ", ".join(f"{c}={v!r}" for c, v in zip(columns, row, strict=True))
        for row in rows.itertuples(index=False)
    )


def _as_integers(
    frame: pd.DataFrame,
    column: str,
    what: str,
    where: str,
    *,
    non_negative: bool = True,
    allow_missing: bool = False,
) -> np.ndarray:
    """Column as float64 holding integers (NaN only where ``allow_missing``); else raises."""
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    except (TypeError, ValueError) as err:
        raise StoreValidationError(f"{where}: {what}.{column} must be integers: {err}") from err
    missing = np.isnan(values)
    present = values[~missing]
    bad = np.zeros(len(values), dtype=bool)
    bad[~missing] = ~np.isfinite(present) | (present != np.round(present))
    if non_negative:
        bad[~missing] |= present < 0
    if not allow_missing:
        bad |= missing
    if bad.any():
        raise StoreValidationError(
            f"{where}: {what}.{column} must hold {'non-negative ' if non_negative else ''}"
            f"integers{'' if allow_missing else ' (no missing values)'}; "
            f"{int(bad.sum())} bad row(s), e.g. {frame[column][bad].head(3).tolist()}"
        )
    return values


def _as_floats(frame: pd.DataFrame, column: str, what: str, where: str) -> np.ndarray:
    try:
        return pd.to_numeric(frame[column], errors="raise").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    except (TypeError, ValueError) as err:
        raise StoreValidationError(f"{where}: {what}.{column} must be numbers: {err}") from err


def _check_splits(frame: pd.DataFrame, what: str, where: str) -> None:
    bad = ~frame["split"].isin(schema.SPLITS).to_numpy()
    if bad.any():
        raise StoreValidationError(
            f"{where}: {what}.split must be one of {list(schema.SPLITS)}; "
            f"found {sorted(map(repr, set(frame['split'][bad])))}"
        )


def _prepare_scores(frame: object, where: str) -> pd.DataFrame:
    """Validated copy of a scores frame, columns :data:`SCORE_COLUMNS`, NaN values as NaN."""
    frame = _require_frame(frame, SCORE_COLUMNS, "scores", where)
    if len(frame) == 0:
        raise StoreValidationError(f"{where}: scores is empty; an evaluation needs >= 1 score")
    frame = frame.reset_index(drop=True)
    fold = _as_integers(frame, "fold", "scores", where, non_negative=False)
    n_scored = _as_integers(frame, "n_classes_scored", "scores", where)
    _check_splits(frame, "scores", where)
    value = _as_floats(frame, "value", "scores", where)
    nan = np.isnan(value)
    infinite = np.isinf(value)
    nan_with_classes = nan & (n_scored > 0)
    number_without_classes = ~nan & (n_scored == 0)
    key = ("fold", "split", "probe", "metric", "value", "n_classes_scored")
    for mask, problem in (
        (infinite, "is infinite"),
        (nan_with_classes, "is NaN although n_classes_scored > 0"),
        (number_without_classes, "is a number although n_classes_scored == 0 (should be NaN)"),
    ):
        if mask.any():
            raise StoreValidationError(
                f"{where}: scores.value {problem} in {int(mask.sum())} row(s): "
                f"{_first_rows(frame, mask, key)}"
            )
    return pd.DataFrame(
        {
            "fold": fold.astype(np.int64),
            "split": frame["split"].to_numpy(dtype=object),
            "probe": frame["probe"].to_numpy(dtype=object),
            "metric": frame["metric"].to_numpy(dtype=object),
            "value": value,
            "n_classes_scored": n_scored.astype(np.int64),
        }
    )


def _prepare_class_scores(frame: object, where: str) -> pd.DataFrame:
    """Validated copy of a class_scores frame: CLASS_SCORE_COLUMNS + n_negatives (may be NaN).

    Key columns (``probe``, ``class_name``) are passed through untouched: NULLs and duplicate
    keys are rejected by the database's constraints (inside the write transaction).
    """
    frame = _require_frame(frame, CLASS_SCORE_COLUMNS, "class_scores", where)
    frame = frame.reset_index(drop=True)
    fold = _as_integers(frame, "fold", "class_scores", where, non_negative=False)
    support = _as_integers(frame, "support", "class_scores", where)
    if "n_negatives" in frame.columns:
        n_negatives = _as_integers(frame, "n_negatives", "class_scores", where, allow_missing=True)
    else:
        n_negatives = np.full(len(frame), np.nan)
    if len(frame):
        _check_splits(frame, "class_scores", where)
    columns = {}
    for name in ("ap", "auc"):
        values = _as_floats(frame, name, "class_scores", where)
        bad = ~np.isnan(values) & ~((values >= 0.0) & (values <= 1.0))
        if bad.any():
            raise StoreValidationError(
                f"{where}: class_scores.{name} must be in [0, 1] or NaN; {int(bad.sum())} bad "
                f"row(s): {_first_rows(frame, bad, ('fold', 'split', 'probe', 'class_name', name))}"
            )
        columns[name] = values
    return pd.DataFrame(
        {
            "fold": fold.astype(np.int64),
            "split": frame["split"].to_numpy(dtype=object),
            "probe": frame["probe"].to_numpy(dtype=object),
            "class_name": frame["class_name"].to_numpy(dtype=object),
            "support": support.astype(np.int64),
            "n_negatives": n_negatives,
            "ap": columns["ap"],
            "auc": columns["auc"],
        }
    )


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _prepare_quarantine(records: object, where: str) -> list[dict[str, Any]]:
    """Validated quarantine rows (dicts of :data:`QUARANTINE_FIELDS`) from record objects."""
    if isinstance(records, (str, bytes, pd.DataFrame)) or not isinstance(records, Iterable):
        raise StoreValidationError(
            f"{where}: quarantine records must be an iterable of records, got {type(records).__name__}"
        )
    rows = []
    for index, record in enumerate(records):
        try:
            row = {name: getattr(record, name) for name in QUARANTINE_FIELDS}
        except AttributeError as err:
            raise StoreValidationError(
                f"{where}: quarantine record {index} ({record!r}) lacks an attribute: {err}"
            ) from err
        label = f"{where}: quarantine record {index} ({row['path']!r})"
        for name in ("path", "reason"):
            if not isinstance(row[name], str) or not row[name]:
                raise StoreValidationError(f"{label}: {name} must be a non-empty str, got {row[name]!r}")
        if not isinstance(row["detail"], str):
            raise StoreValidationError(f"{label}: detail must be a str, got {row['detail']!r}")
        size = row["size_bytes"]
        if size is not None and (
            isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 0
        ):
            raise StoreValidationError(f"{label}: size_bytes must be a non-negative int or None, got {size!r}")
        digest = row["sha256"]
        if digest is not None and (not isinstance(digest, str) or not _SHA256.match(digest)):
            raise StoreValidationError(f"{label}: sha256 must be 64 lower-case hex digits or None, got {digest!r}")
        rows.append(row)
    paths = [row["path"] for row in rows]
    if len(set(paths)) != len(paths):
        repeated = sorted({path for path in paths if paths.count(path) > 1})[:3]
        raise StoreValidationError(f"{where}: quarantine records repeat paths {repeated}; one record per file")
    return rows


# --------------------------------------------------------------------------------- store


_QUARANTINE_IN = "_birdassets_quarantine_in"
_SCORES_IN = "_birdassets_scores_in"
_CLASS_SCORES_IN = "_birdassets_class_scores_in"


class MetricsStore:
    """Read/write access to one metrics database file (created on first write).

    Every method opens and closes its own connection; writes run in one transaction each.
    ``lock_timeout_s`` bounds how long opening waits for another process's lock.
    """

    def __init__(self, path: str | Path, *, lock_timeout_s: float = 60.0) -> None:
        if lock_timeout_s < 0 or not math.isfinite(lock_timeout_s):
            raise ValueError(f"lock_timeout_s must be finite and >= 0, got {lock_timeout_s}")
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)

    def __repr__(self) -> str:
        return f"MetricsStore({str(self.path)!r}, lock_timeout_s={self.lock_timeout_s:g})"

    # ------------------------------------------------------------------ writes

    @contextmanager
    def _transaction(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """Read-write connection in BEGIN/COMMIT with the schema ensured; rolls back on error."""
        with _connection(self.path, read_only=False, lock_timeout_s=self.lock_timeout_s) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                _apply_schema(con, self.path)
                yield con
                con.execute("COMMIT")
            except BaseException as err:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the transaction was already aborted; nothing was committed
                if isinstance(err, duckdb.Error):
                    raise StoreError(
                        f"{self.path}: {what} failed and was rolled back (nothing changed): {err}"
                    ) from err
                raise

    def ensure_schema(self) -> None:
        """Create the database file and every table/view if missing (idempotent)."""
        with self._transaction("creating the schema"):
            pass

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
        if not isinstance(lineage, Lineage):
            raise StoreValidationError(
                f"{self.path}: lineage must be a Lineage, got {type(lineage).__name__}"
            )
        where = f"{self.path} [task={lineage.task!r}, checkpoint={lineage.checkpoint!r}]"
        score_rows = _prepare_scores(scores, where)
        class_rows = _prepare_class_scores(class_scores, where)
        key = [lineage.task, lineage.checkpoint]
        step = None if lineage.step is None else int(lineage.step)
        now = _utc_now()
        with self._transaction(f"write_evaluation {where}") as con:
            for table in ("class_scores", "scores", "lineage"):
                con.execute(f"DELETE FROM {table} WHERE task = ? AND checkpoint = ?", key)
            con.execute(
                """
                INSERT INTO lineage (task, checkpoint, step, manifest_hash, preset_name,
                    preset_hash, folds_hash, checkpoint_path, encoder_family, code_version,
                    run_id, created_at, extra)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON)
                """,
                [
                    *key,
                    step,
                    lineage.manifest_hash,
                    lineage.preset_name,
                    lineage.preset_hash,
                    lineage.folds_hash,
                    lineage.checkpoint_path,
                    lineage.encoder_family,
                    lineage.code_version,
                    lineage.run_id,
                    now,
                    lineage.extra_json(),
                ],
            )
            con.register(_SCORES_IN, score_rows)
            con.execute(
                f"""
                INSERT INTO scores (task, checkpoint, step, fold, split, probe, metric, value,
                    n_classes_scored, run_id, created_at)
                SELECT ?, ?, ?::BIGINT, fold, split, probe, metric,
                    CASE WHEN isnan(value) THEN NULL ELSE value END,
                    n_classes_scored, ?, ?
                FROM {_SCORES_IN}
                """,
                [*key, step, lineage.run_id, now],
            )
            con.unregister(_SCORES_IN)
            if len(class_rows):
                con.register(_CLASS_SCORES_IN, class_rows)
                con.execute(
                    f"""
                    INSERT INTO class_scores (task, checkpoint, step, fold, split, probe,
                        class_name, support, n_negatives, ap, auc, run_id, created_at)
                    SELECT ?, ?, ?::BIGINT, fold, split, probe, class_name, support,
                        CASE WHEN isnan(n_negatives) THEN NULL ELSE n_negatives END,
                        CASE WHEN isnan(ap) THEN NULL ELSE ap END,
                        CASE WHEN isnan(auc) THEN NULL ELSE auc END,
                        ?, ?
                    FROM {_CLASS_SCORES_IN}
                    """,
                    [*key, step, lineage.run_id, now],
                )
                con.unregister(_CLASS_SCORES_IN)
        return len(score_rows)

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
        _require_name(task, "task", self.path)
        with self._transaction(f"upsert_dataset {task!r}") as con:
            con.execute(
                """
                INSERT INTO datasets (task, source, root, manifest_hash, n_recordings, n_classes,
                    updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (task) DO UPDATE SET
                    source = excluded.source, root = excluded.root,
                    manifest_hash = excluded.manifest_hash,
                    n_recordings = excluded.n_recordings, n_classes = excluded.n_classes,
                    updated_at = excluded.updated_at
                """,
                [
                    task,
                    str(source),
                    str(root),
                    str(manifest_hash),
                    int(n_recordings),
                    int(n_classes),
                    _utc_now(),
                ],
            )

    def upsert_checkpoint(
        self, checkpoint: str, run: str, step: int | None, path: str | Path, family: str
    ) -> None:
        """Insert or update the ``checkpoints`` row; ``registered_at`` keeps the first time."""
        _require_name(checkpoint, "checkpoint", self.path)
        now = _utc_now()
        with self._transaction(f"upsert_checkpoint {checkpoint!r}") as con:
            con.execute(
                """
                INSERT INTO checkpoints (checkpoint, run, step, path, family, registered_at,
                    updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (checkpoint) DO UPDATE SET
                    run = excluded.run, step = excluded.step, path = excluded.path,
                    family = excluded.family, updated_at = excluded.updated_at
                """,
                [checkpoint, str(run), None if step is None else int(step), str(path),
                 str(family), now, now],
            )

    def replace_detections(self, task: str, result: Any, run_id: str) -> int:
        """Make the detections of ``(task, result.scorer)`` exactly ``result``'s; one transaction.

        ``result``: a :class:`birdassets.detect.DetectionResult`. Rows of that task and scorer are deleted
        and rewritten, so re-running never duplicates (another scorer's rows are kept). Returns the
        number of window rows written.
        """
        _require_name(task, "task", self.path)
        _require_name(run_id, "run_id", self.path)
        where = f"{self.path} [detections of task={task!r}, scorer={result.scorer!r}]"
        now = _utc_now()
        windows = result.windows_frame()
        files = pd.DataFrame(
            {
                "path": [r.file for r in result.recordings],
                "duration_s": [r.duration_s for r in result.recordings],
                "n_windows": [len(r.start_s) for r in result.recordings],
                "n_positive": [int(r.local_predictions.sum()) for r in result.recordings],
                "global_prediction": [r.global_prediction for r in result.recordings],
                "global_confidence": [r.global_confidence for r in result.recordings],
            }
        )
        config = json.dumps(dataclasses.asdict(result.config))
        with self._transaction(f"replace_detections {where}") as con:
            con.execute("DELETE FROM detections WHERE task = ? AND scorer = ?", [task, result.scorer])
            con.execute("DELETE FROM detection_files WHERE task = ? AND scorer = ?", [task, result.scorer])
            if len(windows):
                con.register("detections_in", windows)
                con.execute(
                    """
                    INSERT INTO detections (task, scorer, path, start_s, duration_s, confidence, local_prediction,
                        run_id, created_at)
                    SELECT ?, ?, file, start_s, duration_s, confidence, local_prediction, ?, ? FROM detections_in
                    """,
                    [task, result.scorer, run_id, now],
                )
                con.unregister("detections_in")
            if len(files):
                con.register("detection_files_in", files)
                con.execute(
                    """
                    INSERT INTO detection_files (task, scorer, path, duration_s, n_windows, n_positive,
                        global_prediction, global_confidence, config, run_id, created_at)
                    SELECT ?, ?, path, duration_s, n_windows, n_positive, global_prediction, global_confidence,
                        ?, ?, ? FROM detection_files_in
                    """,
                    [task, result.scorer, config, run_id, now],
                )
                con.unregister("detection_files_in")
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
        _require_name(task, "task", self.path)
        _require_name(run_id, "run_id", self.path)
        where = f"{self.path} [quarantine of task={task!r}]"
        rows = _prepare_quarantine(records, where)
        now = _utc_now()
        with self._transaction(f"replace_quarantine {where}") as con:
            previous = con.execute(
                "SELECT path, reason, sha256, found_at FROM quarantine WHERE task = ?", [task]
            ).fetchall()
            first_seen = {(path, reason, digest): found for path, reason, digest, found in previous}
            frame = pd.DataFrame(
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
            con.execute("DELETE FROM quarantine WHERE task = ?", [task])
            if rows:
                con.register(_QUARANTINE_IN, frame)
                con.execute(
                    f"""
                    INSERT INTO quarantine (task, path, reason, detail, size_bytes, sha256,
                        found_at, run_id)
                    SELECT ?, path, reason, detail, size_bytes, sha256, found_at, ?
                    FROM {_QUARANTINE_IN}
                    """,
                    [task, run_id],
                )
                con.unregister(_QUARANTINE_IN)
        return len(rows)

    def record_run(self, run_id: str, kind: str, note: str = "") -> None:
        """Insert the ``runs`` row of ``run_id`` (or update its kind/note, keeping started_at)."""
        _require_name(run_id, "run_id", self.path)
        now = _utc_now()
        with self._transaction(f"record_run {run_id!r}") as con:
            con.execute(
                """
                INSERT INTO runs (run_id, kind, note, started_at, created_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (run_id) DO UPDATE SET kind = excluded.kind, note = excluded.note
                """,
                [run_id, str(kind), str(note), now, now],
            )

    # ------------------------------------------------------------------- reads

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> pd.DataFrame:
        """Run ``sql`` on a read-only connection (writes are rejected); result as a DataFrame.

        Raises :class:`StoreNotFoundError` before the first write created the file.
        """
        return _read(self.path, sql, params, self.lock_timeout_s)

    def leaderboard(self) -> pd.DataFrame:
        """The ``leaderboard`` view, best mean first within each task/split/metric/probe."""
        return self.query(
            "SELECT * FROM leaderboard "
            "ORDER BY task, split, metric, probe, mean DESC NULLS LAST, checkpoint"
        )


def _require_name(value: object, name: str, path: Path) -> None:
    if not isinstance(value, str) or not value:
        raise StoreValidationError(f"{path}: {name} must be a non-empty str, got {value!r}")


# ------------------------------------------------------------------------------- formatting


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
