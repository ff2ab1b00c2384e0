"""Checks a write runs before it opens the metrics database: frames, quarantine records, rows.

Each ``prepare_*`` returns a clean copy ready to insert (numbers as float64/int64, NaN where a
value is undefined) or raises :class:`StoreValidationError` naming ``where`` (the file and the
record being written) and the first bad rows. Key columns that only the database can check
(NULL or duplicate ``probe``/``class_name``) are left to its constraints, inside the transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdassets.lineage import Lineage
from birdassets.store import schema
from birdassets.store.connection import StoreValidationError
from birdassets.store.records import CheckpointRow, DatasetRow, EvaluationRecord, RunRow

SCORE_COLUMNS = ("fold", "split", "probe", "metric", "value", "n_classes_scored")
"""Columns an evaluation's ``scores`` frame needs (others are ignored)."""

CLASS_SCORE_COLUMNS = ("fold", "split", "probe", "class_name", "support", "ap", "auc")
"""Columns an evaluation's ``class_scores`` frame needs; ``n_negatives`` is optional
(stored when present, as :func:`birdassets.metrics.per_class_scores` emits it); others are
ignored."""

QUARANTINE_FIELDS = ("path", "reason", "detail", "size_bytes", "sha256")
"""Attributes ``replace_quarantine`` reads from each record."""


# ------------------------------------------------------------------------------ frames


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


def _check_score_values(frame: pd.DataFrame, value: np.ndarray, n_scored: np.ndarray, where: str) -> None:
    """``value`` finite where classes were scored, NaN exactly where none were."""
    nan = np.isnan(value)
    key = ("fold", "split", "probe", "metric", "value", "n_classes_scored")
    for mask, problem in (
        (np.isinf(value), "is infinite"),
        (nan & (n_scored > 0), "is NaN although n_classes_scored > 0"),
        (~nan & (n_scored == 0), "is a number although n_classes_scored == 0 (should be NaN)"),
    ):
        if mask.any():
            raise StoreValidationError(
                f"{where}: scores.value {problem} in {int(mask.sum())} row(s): "
                f"{_first_rows(frame, mask, key)}"
            )


def prepare_scores(frame: object, where: str) -> pd.DataFrame:
    """Validated copy of a scores frame, columns :data:`SCORE_COLUMNS`, NaN values as NaN."""
    frame = _require_frame(frame, SCORE_COLUMNS, "scores", where)
    if len(frame) == 0:
        raise StoreValidationError(f"{where}: scores is empty; an evaluation needs >= 1 score")
    frame = frame.reset_index(drop=True)
    fold = _as_integers(frame, "fold", "scores", where, non_negative=False)
    n_scored = _as_integers(frame, "n_classes_scored", "scores", where)
    _check_splits(frame, "scores", where)
    value = _as_floats(frame, "value", "scores", where)
    _check_score_values(frame, value, n_scored, where)
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


def _as_unit_interval(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """A class_scores column as float64 in [0, 1] or NaN; else raises."""
    values = _as_floats(frame, column, "class_scores", where)
    bad = ~np.isnan(values) & ~((values >= 0.0) & (values <= 1.0))
    if bad.any():
        raise StoreValidationError(
            f"{where}: class_scores.{column} must be in [0, 1] or NaN; {int(bad.sum())} bad "
            f"row(s): {_first_rows(frame, bad, ('fold', 'split', 'probe', 'class_name', column))}"
        )
    return values


def prepare_class_scores(frame: object, where: str) -> pd.DataFrame:
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
    ap = _as_unit_interval(frame, "ap", where)
    auc = _as_unit_interval(frame, "auc", where)
    return pd.DataFrame(
        {
            "fold": fold.astype(np.int64),
            "split": frame["split"].to_numpy(dtype=object),
            "probe": frame["probe"].to_numpy(dtype=object),
            "class_name": frame["class_name"].to_numpy(dtype=object),
            "support": support.astype(np.int64),
            "n_negatives": n_negatives,
            "ap": ap,
            "auc": auc,
        }
    )


# --------------------------------------------------------------------------- quarantine

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _quarantine_row(record: Any, index: int, where: str) -> dict[str, Any]:
    """The :data:`QUARANTINE_FIELDS` of one record, checked."""
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
    if size is not None and (not _is_int(size) or size < 0):
        raise StoreValidationError(f"{label}: size_bytes must be a non-negative int or None, got {size!r}")
    digest = row["sha256"]
    if digest is not None and (not isinstance(digest, str) or not _SHA256.match(digest)):
        raise StoreValidationError(f"{label}: sha256 must be 64 lower-case hex digits or None, got {digest!r}")
    return row


def prepare_quarantine(records: object, where: str) -> list[dict[str, Any]]:
    """Validated quarantine rows (dicts of :data:`QUARANTINE_FIELDS`) from record objects."""
    if isinstance(records, (str, bytes, pd.DataFrame)) or not isinstance(records, Iterable):
        raise StoreValidationError(
            f"{where}: quarantine records must be an iterable of records, got {type(records).__name__}"
        )
    rows = [_quarantine_row(record, index, where) for index, record in enumerate(records)]
    paths = [row["path"] for row in rows]
    if len(set(paths)) != len(paths):
        repeated = sorted({path for path in paths if paths.count(path) > 1})[:3]
        raise StoreValidationError(f"{where}: quarantine records repeat paths {repeated}; one record per file")
    return rows


# --------------------------------------------------------------------------------- rows


def _is_int(value: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def require_name(value: object, name: str, path: Path) -> None:
    """``value`` is a non-empty str, else :class:`StoreValidationError` naming ``path``."""
    if not isinstance(value, str) or not value:
        raise StoreValidationError(f"{path}: {name} must be a non-empty str, got {value!r}")


def check_dataset(row: DatasetRow, path: Path) -> None:
    """``task`` named, ``n_recordings``/``n_classes`` non-negative ints."""
    require_name(row.task, "task", path)
    for name in ("n_recordings", "n_classes"):
        value = getattr(row, name)
        if not _is_int(value) or value < 0:
            raise StoreValidationError(
                f"{path}: dataset {row.task!r}: {name} must be a non-negative int, got {value!r}"
            )


def check_checkpoint(row: CheckpointRow, path: Path) -> None:
    """``checkpoint`` named, ``step`` an int or None."""
    require_name(row.checkpoint, "checkpoint", path)
    if row.step is not None and not _is_int(row.step):
        raise StoreValidationError(
            f"{path}: checkpoint {row.checkpoint!r}: step must be an int or None, got {row.step!r}"
        )


def check_run(row: RunRow, path: Path) -> None:
    """``run_id`` named."""
    require_name(row.run_id, "run_id", path)


def _require_type(value: object, kind: type, what: str, path: Path) -> None:
    if not isinstance(value, kind):
        raise StoreValidationError(f"{path}: {what} must be a {kind.__name__}, got {type(value).__name__}")


def prepare_evaluation(
    lineage: Lineage, scores: object, class_scores: object, path: Path
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """``(where, scores, class_scores)``: the evaluation's label for errors and its clean frames."""
    _require_type(lineage, Lineage, "lineage", path)
    where = f"{path} [task={lineage.task!r}, checkpoint={lineage.checkpoint!r}]"
    return where, prepare_scores(scores, where), prepare_class_scores(class_scores, where)


def prepare_record(record: EvaluationRecord, path: Path) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """:func:`prepare_evaluation` of the record, after checking its rows and that their keys agree."""
    _require_type(record, EvaluationRecord, "record", path)
    where, scores, class_scores = prepare_evaluation(
        record.lineage, record.scores, record.class_scores, path
    )
    for name, kind, check in (
        ("dataset", DatasetRow, check_dataset),
        ("checkpoint", CheckpointRow, check_checkpoint),
        ("run", RunRow, check_run),
    ):
        _require_type(getattr(record, name), kind, f"record.{name}", path)
        check(getattr(record, name), path)
    _check_record_keys(record, where)
    return where, scores, class_scores


def _check_record_keys(record: EvaluationRecord, where: str) -> None:
    """The dataset, checkpoint and run rows name the lineage's task, checkpoint and run."""
    lineage = record.lineage
    for what, got, expected in (
        ("dataset.task", record.dataset.task, lineage.task),
        ("checkpoint.checkpoint", record.checkpoint.checkpoint, lineage.checkpoint),
        ("run.run_id", record.run.run_id, lineage.run_id),
    ):
        if got != expected:
            raise StoreValidationError(
                f"{where}: {what} is {got!r} but the lineage's is {expected!r}; "
                f"one record describes one evaluation"
            )


# --------------------------------------------------------------------------- supervised models


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _flag(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not _flag(value) and np.isfinite(value)


RowSpec = dict[str, tuple[str, Any]]
"""``{field: (what it must be, predicate)}`` of a row handed over as a dict."""

SUPERVISED_MODEL_FIELDS: RowSpec = {
    "model_family": ("a non-empty str", _text),
    "model_config_hash": ("a non-empty str", _text),
    "augment_hash": ("a non-empty str", _text),
    "train_config_hash": ("a non-empty str", _text),
    "loss": ("a non-empty str", _text),
    "precision": ("a non-empty str", _text),
    "epochs": ("an int > 0", lambda v: _is_int(v) and v > 0),
    "seed": ("an int", _is_int),
    "debug": ("a bool", _flag),
    "augmented": ("a bool", _flag),
    "n_params": ("an int >= 0", lambda v: _is_int(v) and v >= 0),
    "train_seconds": ("a finite number >= 0", lambda v: _number(v) and v >= 0),
}
"""The ``model_row`` of :meth:`birdassets.store.MetricsStore.record_supervised` (its task, checkpoint and
run come from the record's lineage)."""

SUBMISSION_SPEED_FIELDS: RowSpec = {
    "audio_s_per_s": ("a finite number > 0", lambda v: _number(v) and v > 0),
    "projected_s": ("a finite number >= 0", lambda v: _number(v) and v >= 0),
    "soundscapes": ("an int >= 0", lambda v: _is_int(v) and v >= 0),
    "audio_seconds": ("a finite number >= 0", lambda v: _number(v) and v >= 0),
    "n_folds": ("an int > 0", lambda v: _is_int(v) and v > 0),
    "batch_size": ("an int > 0", lambda v: _is_int(v) and v > 0),
}
"""The ``row`` of :meth:`birdassets.store.MetricsStore.record_submission_speed`."""

EXPORT_FIELDS: RowSpec = {
    "checkpoint": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "family": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "lineage_hash": ("64 lower-case hex digits", lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v)),
    "size_bytes": ("an int >= 0", lambda v: _is_int(v) and v >= 0),
    "files": ("a JSON object", lambda v: isinstance(v, str) and v.startswith("{")),
    "tflite_max_abs_diff": ("a finite number >= 0 or None", lambda v: v is None or (_number(v) and v >= 0)),
}
"""The ``row`` of :meth:`birdassets.store.MetricsStore.record_export`."""

EPOCH_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "val_auc", "seconds")
"""Columns of the ``epochs`` frame of ``record_supervised``: one row per (fold, epoch)."""


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value DuckDB binds."""
    return value.item() if isinstance(value, np.generic) else value


def prepare_row(row: object, spec: RowSpec, what: str, where: str) -> dict[str, Any]:
    """The fields of ``spec`` from the mapping ``row`` as Python values, each checked; no other key allowed."""
    if not isinstance(row, dict):
        raise StoreValidationError(f"{where}: {what} must be a dict, got {type(row).__name__}")
    missing, unknown = [k for k in spec if k not in row], sorted(set(row) - set(spec))
    if missing or unknown:
        raise StoreValidationError(f"{where}: {what} lacks {missing} / has unknown {unknown}; expected {list(spec)}")
    for name, (expected, valid) in spec.items():
        if not valid(row[name]):
            raise StoreValidationError(f"{where}: {what}.{name} must be {expected}, got {row[name]!r}")
    return {name: _plain(row[name]) for name in spec}


def _check_no_infinity(frame: pd.DataFrame, values: np.ndarray, column: str, where: str) -> None:
    bad = np.isinf(values)
    if bad.any():
        raise StoreValidationError(
            f"{where}: epochs.{column} is infinite in {int(bad.sum())} row(s): "
            f"{_first_rows(frame, bad, ('fold', 'epoch', column))}"
        )


def prepare_epochs(frame: object, where: str) -> pd.DataFrame:
    """Validated copy of a training history: :data:`EPOCH_COLUMNS`, one row per (fold, epoch).

    Losses finite or NaN (stored as NULL), ``val_auc`` in [0, 1] or NaN (undefined), ``seconds`` >= 0.
    """
    frame = _require_frame(frame, EPOCH_COLUMNS, "epochs", where)
    if len(frame) == 0:
        raise StoreValidationError(f"{where}: epochs is empty; a trained model has >= 1 epoch")
    frame = frame.reset_index(drop=True)
    clean = {name: _as_integers(frame, name, "epochs", where).astype(np.int64) for name in ("fold", "epoch")}
    for name in ("train_loss", "val_loss", "val_auc", "seconds"):
        clean[name] = _as_floats(frame, name, "epochs", where)
        _check_no_infinity(frame, clean[name], name, where)
    for mask, problem in (
        (~np.isnan(clean["val_auc"]) & ((clean["val_auc"] < 0) | (clean["val_auc"] > 1)), "val_auc outside [0, 1]"),
        (~(clean["seconds"] >= 0), "seconds missing or negative"),
        (pd.DataFrame(clean)[["fold", "epoch"]].duplicated().to_numpy(), "a repeated (fold, epoch)"),
    ):
        if mask.any():
            raise StoreValidationError(
                f"{where}: epochs has {problem} in {int(mask.sum())} row(s): "
                f"{_first_rows(frame, mask, EPOCH_COLUMNS)}"
            )
    return pd.DataFrame(clean)[list(EPOCH_COLUMNS)]


def prepare_supervised(
    record: EvaluationRecord, model_row: object, epochs: object, path: Path
) -> tuple[str, pd.DataFrame, pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """``(where, scores, class_scores, model_row, epochs)`` of a supervised model, every part checked."""
    where, scores, class_scores = prepare_record(record, path)
    model = prepare_row(model_row, SUPERVISED_MODEL_FIELDS, "model_row", where)
    return where, scores, class_scores, model, prepare_epochs(epochs, where)
