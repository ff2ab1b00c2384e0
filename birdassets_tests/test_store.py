"""Tests of birdassets.store on real DuckDB files in tmp_path."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from birdassets.cli.format import format_frame
from birdassets.lineage import Lineage
from birdassets.store import (
    SCHEMA_VERSION,
    CheckpointRow,
    DatasetRow,
    EvaluationRecord,
    MetricsStore,
    RunRow,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreValidationError,
    query_readonly,
)

N_FOLDS = 5
METRICS = ("cmAP", "AUC", "pcmAP", "top1")
CLASSES = ("amerob", "norcar", "blujay")


def make_lineage(
    checkpoint: str = "demo-vit@200", *, run_id: str = "run-1", **overrides
) -> Lineage:
    step = int(checkpoint.rsplit("@", 1)[1]) if "@" in checkpoint else None
    fields = dict(
        task="HSN",
        checkpoint=checkpoint,
        step=step,
        manifest_hash="m" * 8,
        preset_name="birdset32k",
        preset_hash="p" * 8,
        folds_hash="f" * 8,
        checkpoint_path=f"/ckpts/{checkpoint}",
        encoder_family="vit",
        code_version="0.1.0",
        run_id=run_id,
        extra={"seed": np.int64(7), "probe": {"kind": "linear", "l2": 1e-3}},
    )
    fields.update(overrides)
    return Lineage(**fields)


def make_scores(seed: int, probes=("linear",), splits=("valid", "test")) -> pd.DataFrame:
    """One row per (fold, split, probe, metric) with random values in [0, 1)."""
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product(
        [range(N_FOLDS), splits, probes, METRICS], names=["fold", "split", "probe", "metric"]
    )
    frame = index.to_frame(index=False)
    frame["value"] = rng.random(len(frame))
    frame["n_classes_scored"] = 3
    return frame


def make_class_scores(seed: int, probes=("linear",), splits=("valid", "test")) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1000)
    index = pd.MultiIndex.from_product(
        [range(N_FOLDS), splits, probes, CLASSES], names=["fold", "split", "probe", "class_name"]
    )
    frame = index.to_frame(index=False)
    frame["support"] = rng.integers(1, 20, len(frame))
    frame["n_negatives"] = rng.integers(20, 40, len(frame))
    frame["ap"] = rng.random(len(frame))
    frame["auc"] = rng.random(len(frame))
    return frame


def count(store: MetricsStore, table: str, where: str = "TRUE") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table} WHERE {where}")["n"].iloc[0])


@pytest.fixture
def store(tmp_path) -> MetricsStore:
    return MetricsStore(tmp_path / "home" / "birdassets.duckdb", lock_timeout_s=30)


def test_leaderboard_mean_and_std_match_numpy(store):
    scores = make_scores(seed=0)
    written = store.write_evaluation(make_lineage(), scores, make_class_scores(0))
    assert written == len(scores) == N_FOLDS * 2 * len(METRICS)

    board = store.leaderboard()
    assert len(board) == 2 * len(METRICS)
    for row in board.itertuples():
        folds = scores[(scores.split == row.split) & (scores.metric == row.metric)]["value"]
        assert row.n_folds == N_FOLDS
        assert row.n_folds_scored == N_FOLDS
        assert row.mean == pytest.approx(np.mean(folds), abs=1e-12)
        assert row.std == pytest.approx(np.std(folds, ddof=1), abs=1e-12)
        assert (row.task, row.checkpoint, row.step, row.run_id) == (
            "HSN",
            "demo-vit@200",
            200,
            "run-1",
        )
    assert count(store, "class_scores") == N_FOLDS * 2 * len(CLASSES)
    lineage = store.query("SELECT * FROM lineage")
    assert len(lineage) == 1
    assert json.loads(lineage["extra"].iloc[0]) == {
        "seed": 7,
        "probe": {"kind": "linear", "l2": 1e-3},
    }
    version = store.query("SELECT version FROM schema_version")
    assert version["version"].tolist() == [SCHEMA_VERSION]


def test_rewrite_replaces_and_other_checkpoint_adds(store):
    store.write_evaluation(make_lineage(run_id="run-1"), make_scores(0), make_class_scores(0))
    n_scores, n_classes = count(store, "scores"), count(store, "class_scores")

    new_scores = make_scores(seed=1)
    store.write_evaluation(make_lineage(run_id="run-2"), new_scores, make_class_scores(1))
    assert count(store, "scores") == n_scores
    assert count(store, "class_scores") == n_classes
    assert count(store, "lineage") == 1
    stored = store.query(
        "SELECT fold, split, probe, metric, value, run_id FROM scores "
        "ORDER BY fold, split, probe, metric"
    )
    expected = new_scores.sort_values(["fold", "split", "probe", "metric"]).reset_index(drop=True)
    np.testing.assert_array_equal(stored["value"].to_numpy(), expected["value"].to_numpy())
    assert set(stored["run_id"]) == {"run-2"}
    assert store.query("SELECT run_id FROM lineage")["run_id"].tolist() == ["run-2"]

    store.write_evaluation(make_lineage("demo-vit@400"), make_scores(2), make_class_scores(2))
    assert count(store, "scores") == 2 * n_scores
    assert count(store, "class_scores") == 2 * n_classes
    assert count(store, "scores", "checkpoint = 'demo-vit@200' AND run_id = 'run-2'") == n_scores
    assert count(store, "lineage") == 2


@pytest.mark.parametrize("failure", ["duplicate_class_key", "null_class_name"])
def test_failed_write_leaves_previous_rows(store, failure):
    old_scores = make_scores(seed=0)
    store.write_evaluation(make_lineage(run_id="old"), old_scores, make_class_scores(0))
    before = store.query("SELECT * FROM scores ORDER BY fold, split, probe, metric")
    before_classes = store.query("SELECT * FROM class_scores ORDER BY ALL")

    bad_classes = make_class_scores(1)
    if failure == "duplicate_class_key":  # rejected by the PRIMARY KEY, inside the transaction
        bad_classes = pd.concat([bad_classes, bad_classes.iloc[[3]]], ignore_index=True)
    else:  # rejected by NOT NULL, inside the transaction
        bad_classes["class_name"] = bad_classes["class_name"].astype(object)
        bad_classes.loc[len(bad_classes) - 1, "class_name"] = None
    with pytest.raises(StoreError, match="rolled back") as info:
        store.write_evaluation(make_lineage(run_id="new"), make_scores(seed=1), bad_classes)
    assert str(store.path) in str(info.value)
    assert isinstance(info.value.__cause__, duckdb.ConstraintException)

    after = store.query("SELECT * FROM scores ORDER BY fold, split, probe, metric")
    pd.testing.assert_frame_equal(after, before)
    after_classes = store.query("SELECT * FROM class_scores ORDER BY ALL")
    pd.testing.assert_frame_equal(after_classes, before_classes)
    assert store.query("SELECT run_id FROM lineage")["run_id"].tolist() == ["old"]


def test_score_by_step_groups_runs_and_orders_steps(store):
    # Written out of order, with two runs and one checkpoint key without '@'.
    for checkpoint, seed in [("vit-a@300", 3), ("vit-a@100", 1), ("vit-b@50", 5), ("vit-a@200", 2),
                             ("perch", 9)]:
        store.write_evaluation(
            make_lineage(checkpoint), make_scores(seed, splits=("test",)), make_class_scores(seed)
        )
    curve = store.query(
        "SELECT * FROM score_by_step WHERE split = 'test' AND metric = 'cmAP' AND probe = 'linear'"
    )
    assert curve[["run", "checkpoint"]].values.tolist() == [
        ["perch", "perch"],
        ["vit-a", "vit-a@100"],
        ["vit-a", "vit-a@200"],
        ["vit-a", "vit-a@300"],
        ["vit-b", "vit-b@50"],
    ]
    assert curve["step"].iloc[1:].tolist() == [100, 200, 300, 50]
    assert pd.isna(curve["step"].iloc[0])
    for row in curve.itertuples():
        seed = {"vit-a@100": 1, "vit-a@200": 2, "vit-a@300": 3, "vit-b@50": 5, "perch": 9}[
            row.checkpoint
        ]
        values = make_scores(seed, splits=("test",)).query("metric == 'cmAP'")["value"]
        assert row.mean == pytest.approx(values.mean(), abs=1e-12)
        assert row.std == pytest.approx(values.std(ddof=1), abs=1e-12)
        assert row.n_folds == N_FOLDS


def test_nan_metric_is_null_and_skipped_by_aggregates(store):
    scores = make_scores(0)
    undefined = (scores.fold == 0) & (scores.metric == "AUC")
    scores.loc[undefined, "value"] = np.nan
    scores.loc[undefined, "n_classes_scored"] = 0
    classes = make_class_scores(0)
    classes.loc[0, ["ap", "auc"]] = np.nan
    store.write_evaluation(make_lineage(), scores, classes)

    assert count(store, "scores", "value IS NULL") == int(undefined.sum())
    assert count(store, "scores", "isnan(value)") == 0
    assert count(store, "class_scores", "ap IS NULL AND auc IS NULL") == 1
    board = store.leaderboard().set_index(["split", "metric"])
    row = board.loc[("test", "AUC")]
    kept = scores[(scores.split == "test") & (scores.metric == "AUC") & ~undefined]["value"]
    assert (row["n_folds"], row["n_folds_scored"], row["min_classes_scored"]) == (N_FOLDS, 4, 0)
    assert row["mean"] == pytest.approx(kept.mean(), abs=1e-12)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda s, c: (s.drop(columns="n_classes_scored"), c),
            r"lacks column\(s\) \['n_classes_scored'\]",
        ),
        (lambda s, c: (s, c.drop(columns="auc")), r"class_scores lacks column\(s\) \['auc'\]"),
        (lambda s, c: (s.assign(value=np.where(s.index == 2, np.inf, s.value)), c), "infinite"),
        (lambda s, c: (s.assign(value=np.where(s.index == 2, np.nan, s.value)), c), "NaN although"),
        (lambda s, c: (s.assign(n_classes_scored=0), c), "n_classes_scored == 0"),
        (lambda s, c: (s.assign(split="train"), c), "split must be one of"),
        (lambda s, c: (s.assign(fold=0.5), c), "fold must hold"),
        (lambda s, c: (s, c.assign(ap=1.5)), r"ap must be in \[0, 1\]"),
        (lambda s, c: (s.iloc[:0], c), "scores is empty"),
    ],
)
def test_bad_frames_are_rejected_before_writing(store, mutate, message):
    scores, classes = mutate(make_scores(0), make_class_scores(0))
    with pytest.raises(StoreValidationError, match=message) as info:
        store.write_evaluation(make_lineage(), scores, classes)
    assert "demo-vit@200" in str(info.value)
    assert not store.path.exists()  # validation happens before the file is even opened


def test_bad_lineage_is_rejected():
    with pytest.raises(StoreValidationError, match="step"):
        make_lineage(step="200")
    with pytest.raises(StoreValidationError, match="run_id"):
        make_lineage(run_id="")
    with pytest.raises(StoreValidationError, match="JSON"):
        make_lineage(extra={"when": object()})


def test_upserts_and_schema_are_idempotent(store):
    store.ensure_schema()
    store.ensure_schema()
    assert store.query("SELECT version FROM schema_version")["version"].tolist() == [SCHEMA_VERSION]

    store.upsert_dataset("HSN", "birdset", "/data/hsn", "aaa", 100, 21)
    store.upsert_dataset("HSN", "birdset", "/data/hsn2", "bbb", 120, 22)
    datasets = store.query("SELECT * FROM datasets")
    assert datasets[["root", "manifest_hash", "n_recordings", "n_classes"]].values.tolist() == [
        ["/data/hsn2", "bbb", 120, 22]
    ]

    store.upsert_checkpoint("vit-a@100", "vit-a", 100, "/ck/100", "vit")
    first = store.query("SELECT registered_at FROM checkpoints")["registered_at"].iloc[0]
    store.upsert_checkpoint("vit-a@100", "vit-a", 100, "/moved/100", "vit")
    store.upsert_checkpoint("perch", "perch", None, "/ck/perch", "perch")
    checkpoints = store.query("SELECT * FROM checkpoints ORDER BY checkpoint")
    assert checkpoints["path"].tolist() == ["/ck/perch", "/moved/100"]
    assert checkpoints.loc[checkpoints.checkpoint == "vit-a@100", "registered_at"].iloc[0] == first

    store.record_run("r1", "benchmark", "first")
    store.record_run("r1", "benchmark", "renamed")
    store.record_run("r2", "ingest")
    runs = store.query("SELECT run_id, kind, note FROM runs ORDER BY run_id")
    assert runs.values.tolist() == [["r1", "benchmark", "renamed"], ["r2", "ingest", ""]]


def test_query_is_read_only(store):
    with pytest.raises(StoreNotFoundError, match="does not exist") as info:
        store.query("SELECT 1")
    assert str(store.path) in str(info.value)

    store.write_evaluation(make_lineage(), make_scores(0), make_class_scores(0))
    n = count(store, "scores")
    with pytest.raises(StoreError, match="read-only"):
        store.query("DELETE FROM scores")
    with pytest.raises(StoreError, match="read-only"):
        query_readonly(store.path, "DROP TABLE scores")
    assert count(store, "scores") == n
    selected = query_readonly(
        store.path,
        "SELECT count(*) AS n FROM scores WHERE metric = ? AND split = ?",
        ["cmAP", "test"],
    )
    assert selected["n"].tolist() == [N_FOLDS]


def test_second_process_holding_the_lock(store, tmp_path):
    store.ensure_schema()
    holder_script = textwrap.dedent(
        f"""
        import time, duckdb
        con = duckdb.connect({str(store.path)!r})
        con.execute("CREATE TABLE holder_marker AS SELECT 42 AS answer")
        print("locked", flush=True)
        time.sleep(3)
        con.close()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        impatient = MetricsStore(store.path, lock_timeout_s=0.2)
        with pytest.raises(StoreLockedError, match="locked by another process") as info:
            impatient.write_evaluation(make_lineage(), make_scores(0), make_class_scores(0))
        assert str(store.path) in str(info.value)
        assert holder.poll() is None  # still holding the lock while the next write starts

        written = store.write_evaluation(make_lineage(), make_scores(0), make_class_scores(0))
    finally:
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert written == count(store, "scores") == N_FOLDS * 2 * len(METRICS)
    assert store.query("SELECT answer FROM holder_marker")["answer"].tolist() == [42]


def test_format_frame_round_trips(store):
    scores = make_scores(0)
    scores.loc[0, ["value", "n_classes_scored"]] = [np.nan, 0]
    store.write_evaluation(make_lineage(), scores, make_class_scores(0))
    frame = store.query(
        "SELECT checkpoint, fold, split, metric, value, created_at FROM scores "
        "ORDER BY value NULLS FIRST"
    )
    assert pd.isna(frame["value"].iloc[0])

    parsed = pd.read_csv(io.StringIO(format_frame(frame, "csv")))
    assert list(parsed.columns) == list(frame.columns)
    np.testing.assert_array_equal(parsed["value"].to_numpy(), frame["value"].to_numpy())
    assert parsed["fold"].tolist() == frame["fold"].tolist()
    assert parsed["metric"].tolist() == frame["metric"].tolist()
    assert (pd.to_datetime(parsed["created_at"]) == frame["created_at"]).all()

    records = json.loads(format_frame(frame, "json"))
    assert len(records) == len(frame)
    assert records[0]["value"] is None
    assert records[1]["value"] == frame["value"].iloc[1]
    assert records[1]["fold"] == frame["fold"].iloc[1]
    assert records[1]["checkpoint"] == "demo-vit@200"
    assert pd.Timestamp(records[1]["created_at"]) == frame["created_at"].iloc[1]
    assert "T" in records[1]["created_at"]

    table = format_frame(frame, "table").splitlines()
    assert table[0].split() == list(frame.columns)
    assert set(table[1].replace(" ", "")) == {"-"}
    assert table[2].split()[:5] == ["demo-vit@200", "0", "valid", "cmAP", "NaN"]
    assert table[3].split()[:5] == [
        "demo-vit@200",
        str(frame["fold"].iloc[1]),
        frame["split"].iloc[1],
        frame["metric"].iloc[1],
        f"{frame['value'].iloc[1]:.4f}",
    ]
    assert table[-1] == f"({len(frame)} rows)"
    widths = {len(line) for line in table[:-1]}
    assert max(widths) == len(table[1])  # every row fits under the separator

    with pytest.raises(ValueError, match="unknown format"):
        format_frame(frame, "xml")


# ------------------------------------------------------------------------------- quarantine


def _records(*specs):
    from birdassets.sources.ingest import QuarantineRecord

    return [QuarantineRecord(path, reason, f"{reason} detail", size, sha) for path, reason, size, sha in specs]


def test_replace_quarantine_replaces_never_duplicates_and_keeps_first_seen(store):
    a, b = "a" * 64, "b" * 64
    first = _records(
        ("/d/x.wav", "truncated", 100, a), ("/d/y.ogg", "missing", None, None), ("/d/z.mp3", "empty", 0, b)
    )
    assert store.replace_quarantine("HSN", first, "run-1") == 3
    store.replace_quarantine("other", _records(("/o/q.wav", "corrupt", 5, a)), "run-1")
    rows = store.query("SELECT * FROM quarantine WHERE task = 'HSN' ORDER BY path")
    assert rows["path"].tolist() == ["/d/x.wav", "/d/y.ogg", "/d/z.mp3"]
    assert rows["reason"].tolist() == ["truncated", "missing", "empty"]
    assert rows["size_bytes"].isna().tolist() == [False, True, False]
    assert rows["sha256"].tolist()[0] == a and rows["sha256"].isna().tolist() == [False, True, False]
    seen = dict(zip(rows["path"], rows["found_at"], strict=True))

    # the same files again: same rows, the new run id, found_at of the first sighting
    assert store.replace_quarantine("HSN", first, "run-2") == 3
    again = store.query("SELECT * FROM quarantine WHERE task = 'HSN' ORDER BY path")
    assert len(again) == 3 and set(again["run_id"]) == {"run-2"}
    assert dict(zip(again["path"], again["found_at"], strict=True)) == seen

    # x.wav repaired, z.mp3 now holds other bytes (a new finding): replaced, not appended
    changed = _records(("/d/y.ogg", "missing", None, None), ("/d/z.mp3", "not_audio", 12, a))
    store.replace_quarantine("HSN", changed, "run-3")
    now = store.query("SELECT path, reason, found_at FROM quarantine WHERE task = 'HSN' ORDER BY path")
    assert now[["path", "reason"]].values.tolist() == [["/d/y.ogg", "missing"], ["/d/z.mp3", "not_audio"]]
    assert now["found_at"].iloc[0] == seen["/d/y.ogg"] and now["found_at"].iloc[1] > seen["/d/z.mp3"]
    assert count(store, "quarantine", "task = 'other'") == 1  # other tasks untouched

    assert store.replace_quarantine("HSN", [], "run-4") == 0  # everything repaired
    assert count(store, "quarantine", "task = 'HSN'") == 0


@pytest.mark.parametrize(
    "records,message",
    [
        ("not records", "iterable of records"),
        ("object", "lacks an attribute"),
        ("dup", "repeat paths"),
        ("sha", "sha256 must be 64"),
        ("size", "size_bytes must be a non-negative int"),
    ],
)
def test_bad_quarantine_records_are_rejected_and_change_nothing(store, records, message):
    from birdassets.sources.ingest import QuarantineRecord

    store.replace_quarantine("HSN", _records(("/d/x.wav", "truncated", 100, None)), "run-1")
    bad = {
        "dup": _records(("/d/a.wav", "empty", 0, None), ("/d/a.wav", "corrupt", 3, None)),
        "sha": [QuarantineRecord("/d/a.wav", "corrupt", "", 3, "not-a-hash")],
        "size": [QuarantineRecord("/d/a.wav", "corrupt", "", -1, None)],
        "object": [object()],
    }.get(records, records)
    with pytest.raises(StoreValidationError, match=message):
        store.replace_quarantine("HSN", bad, "run-2")
    rows = store.query("SELECT path, run_id FROM quarantine")
    assert rows.values.tolist() == [["/d/x.wav", "run-1"]]


def test_a_version_1_database_gains_the_quarantine_table(store):
    store.ensure_schema()
    with duckdb.connect(str(store.path)) as con:  # roll the file back to what version 1 wrote
        con.execute("DROP TABLE quarantine")
        con.execute("DROP TABLE detections")
        con.execute("DROP TABLE detection_files")
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version VALUES (1, now())")
    store.replace_quarantine("HSN", _records(("/d/x.wav", "empty", 0, None)), "run-1")
    assert store.query("SELECT version FROM schema_version ORDER BY version")["version"].tolist() == [1, SCHEMA_VERSION]
    assert SCHEMA_VERSION == 5 and count(store, "quarantine") == 1
    assert count(store, "detections") == 0 and count(store, "detection_files") == 0  # version 3 tables too


# ------------------------------------------------------------------------ record_evaluation

RECORD_STATEMENTS = (
    "BEGIN TRANSACTION",
    "CREATE TABLE IF",  # schema_version, then the version check: the schema is current
    "SELECT max(version) FROM",
    "INSERT INTO datasets",
    "INSERT INTO checkpoints",
    "INSERT INTO runs",
    "DELETE FROM class_scores",
    "DELETE FROM scores",
    "DELETE FROM lineage",
    "INSERT INTO lineage",
    "INSERT INTO scores",
    "INSERT INTO class_scores",
    "COMMIT",
)
"""What record_evaluation executes on a database whose schema is current, in order (3 tokens each)."""

EVALUATION_TABLES = ("datasets", "checkpoints", "runs", "lineage", "scores", "class_scores")


def statement_label(sql: str) -> str:
    return " ".join(sql.split()[:3])


class StatementTrap:
    """A real DuckDB connection that calls ``action(connection, sql)`` before its ``at``-th execute.

    Passed to ``MetricsStore(wrap_connection=...)`` via :func:`functools.partial`; ``executed``
    lists every statement's label in order.
    """

    def __init__(self, con, *, at: int, action, executed: list[str]) -> None:
        self.con, self.at, self.action, self.executed = con, at, action, executed

    def execute(self, sql, *params):
        self.executed.append(statement_label(sql))
        if len(self.executed) == self.at:
            self.action(self.con, sql)
        return self.con.execute(sql, *params)

    def __getattr__(self, name):
        return getattr(self.con, name)


class InjectedFailure(Exception):
    pass


def make_record(
    checkpoint: str = "demo-vit@200", *, run_id: str = "run-1", seed: int = 0, version: str = "v1"
) -> EvaluationRecord:
    """An evaluation whose every row shows ``run_id``/``version``/``seed``, so a mix would be seen."""
    lineage = make_lineage(checkpoint, run_id=run_id, manifest_hash=f"manifest-{version}")
    return EvaluationRecord(
        lineage=lineage,
        scores=make_scores(seed),
        class_scores=make_class_scores(seed),
        dataset=DatasetRow("HSN", "birdset", f"/data/hsn-{version}", f"manifest-{version}", 100 + seed, 21),
        checkpoint=CheckpointRow(checkpoint, checkpoint.split("@")[0], lineage.step, f"/ckpts/{version}", "vit"),
        run=RunRow(run_id, "benchmark", f"HSN x {checkpoint} ({version})"),
    )


def snapshot(store: MetricsStore) -> dict[str, pd.DataFrame]:
    """Every row of the six tables an evaluation writes, read through one read-only connection."""
    with duckdb.connect(str(store.path), read_only=True) as con:
        return {table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").df() for table in EVALUATION_TABLES}


def assert_same_state(store: MetricsStore, before: dict[str, pd.DataFrame]) -> None:
    after = snapshot(store)
    for table in EVALUATION_TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


def counts(store: MetricsStore) -> dict[str, int]:
    return {table: count(store, table) for table in EVALUATION_TABLES}


def test_record_evaluation_writes_every_table_in_one_transaction(store):
    executed: list[str] = []
    store.record_evaluation(make_record())  # the file now exists with the current schema
    trapping = MetricsStore(
        store.path,
        wrap_connection=functools.partial(StatementTrap, at=0, action=None, executed=executed),
    )
    written = trapping.record_evaluation(make_record("demo-vit@400", run_id="run-2", seed=4))
    assert tuple(executed) == RECORD_STATEMENTS
    assert written == N_FOLDS * 2 * len(METRICS)
    per_checkpoint = N_FOLDS * 2 * len(METRICS), N_FOLDS * 2 * len(CLASSES)
    assert counts(store) == {
        "datasets": 1, "checkpoints": 2, "runs": 2, "lineage": 2,
        "scores": 2 * per_checkpoint[0], "class_scores": 2 * per_checkpoint[1],
    }
    board = store.leaderboard().query("checkpoint == 'demo-vit@400' and split == 'test' and metric == 'cmAP'")
    values = make_scores(4).query("split == 'test' and metric == 'cmAP'")["value"]
    assert board["mean"].iloc[0] == pytest.approx(values.mean(), abs=1e-12)
    assert store.query("SELECT root, n_recordings FROM datasets").values.tolist() == [["/data/hsn-v1", 104]]


@pytest.mark.parametrize("error", [InjectedFailure, duckdb.IOException])
def test_a_failure_at_any_statement_of_record_evaluation_changes_nothing(store, error):
    store.record_evaluation(make_record(run_id="run-old", seed=0, version="old"))
    store.record_evaluation(make_record("demo-vit@100", run_id="run-old", seed=1, version="old"))
    before = snapshot(store)
    new = make_record(run_id="run-new", seed=2, version="new")  # replaces the task x checkpoint

    def fail(con, sql):
        raise error(f"injected before: {statement_label(sql)}")

    for at in range(1, len(RECORD_STATEMENTS) + 1):
        executed: list[str] = []
        trap = functools.partial(StatementTrap, at=at, action=fail, executed=executed)
        with pytest.raises(InjectedFailure if error is InjectedFailure else StoreError) as info:
            MetricsStore(store.path, wrap_connection=trap).record_evaluation(new)
        assert f"injected before: {RECORD_STATEMENTS[at - 1]}" in str(info.value)
        assert tuple(executed) == RECORD_STATEMENTS[:at]
        assert_same_state(store, before)

    assert store.record_evaluation(new) == N_FOLDS * 2 * len(METRICS)  # and then it goes through
    after = snapshot(store)
    assert set(after["runs"]["run_id"]) == {"run-old", "run-new"}
    assert after["lineage"].set_index("checkpoint")["run_id"].to_dict() == {
        "demo-vit@100": "run-old", "demo-vit@200": "run-new"
    }
    assert after["datasets"]["root"].tolist() == ["/data/hsn-new"]
    assert len(after["scores"]) == len(before["scores"])


KILLED_WRITER = """
import functools, json, pickle, sys, time
from pathlib import Path
from birdassets.store import MetricsStore
from birdassets_tests.test_store import StatementTrap

db, record, marker, at = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

def pause(con, sql):
    seen = {table: con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
            for table, where in [("datasets", "root = '/data/hsn-new'"), ("checkpoints", "path = '/ckpts/new'"),
                                 ("runs", "run_id = 'run-new'"), ("lineage", "run_id = 'run-new'"),
                                 ("scores", "run_id = 'run-new'")]}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(seen))
    tmp.replace(marker)
    time.sleep(600)

trap = functools.partial(StatementTrap, at=at, action=pause, executed=[])
MetricsStore(db, wrap_connection=trap).record_evaluation(pickle.loads(Path(record).read_bytes()))
"""


def test_a_writer_killed_between_statements_leaves_all_or_nothing(store, tmp_path):
    store.record_evaluation(make_record(run_id="run-old", seed=0, version="old"))
    before = snapshot(store)
    new = make_record(run_id="run-new", seed=2, version="new")
    record_file, marker = tmp_path / "record.pickle", tmp_path / "paused.json"
    record_file.write_bytes(pickle.dumps(new))
    at = RECORD_STATEMENTS.index("INSERT INTO scores") + 1  # upserts and lineage done, scores next
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(store.path), str(record_file), str(marker), str(at)],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert writer.poll() is None, f"the writer exited early with status {writer.returncode}"
            assert time.monotonic() < deadline, "the writer never reached the statement"
            time.sleep(0.05)
        # inside its transaction the writer had already written every row before the scores
        assert json.loads(marker.read_text()) == {
            "datasets": 1, "checkpoints": 1, "runs": 1, "lineage": 1, "scores": 0
        }
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL

    assert_same_state(MetricsStore(store.path), before)  # reopened: none of the new rows
    assert store.record_evaluation(new) == N_FOLDS * 2 * len(METRICS)
    assert store.query("SELECT DISTINCT run_id FROM scores")["run_id"].tolist() == ["run-new"]
    assert store.query("SELECT path FROM checkpoints")["path"].tolist() == ["/ckpts/new"]


def test_re_recording_replaces_never_duplicates(store):
    first = make_record(run_id="run-1", seed=0)
    store.record_evaluation(first)
    one = {
        "datasets": 1, "checkpoints": 1, "runs": 1, "lineage": 1,
        "scores": N_FOLDS * 2 * len(METRICS), "class_scores": N_FOLDS * 2 * len(CLASSES),
    }
    assert counts(store) == one
    registered = store.query("SELECT registered_at FROM checkpoints")["registered_at"].iloc[0]

    store.record_evaluation(first)  # the very same record again
    assert counts(store) == one

    second = make_record(run_id="run-2", seed=5, version="v2")  # same task x checkpoint, new run
    store.record_evaluation(second)
    assert counts(store) == {**one, "runs": 2}
    stored = store.query("SELECT value FROM scores ORDER BY fold, split, probe, metric")["value"]
    expected = make_scores(5).sort_values(["fold", "split", "probe", "metric"])["value"]
    np.testing.assert_array_equal(stored.to_numpy(), expected.to_numpy())
    assert store.query("SELECT DISTINCT run_id FROM class_scores")["run_id"].tolist() == ["run-2"]
    assert store.query("SELECT manifest_hash FROM lineage")["manifest_hash"].tolist() == ["manifest-v2"]
    assert store.query("SELECT root, n_recordings FROM datasets").values.tolist() == [["/data/hsn-v2", 105]]
    checkpoints = store.query("SELECT path, registered_at FROM checkpoints")
    assert checkpoints.values.tolist() == [["/ckpts/v2", registered]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: dataclasses.replace(r, dataset=dataclasses.replace(r.dataset, task="other")),
         "dataset.task is 'other' but the lineage's is 'HSN'"),
        (lambda r: dataclasses.replace(r, checkpoint=dataclasses.replace(r.checkpoint, checkpoint="x@1")),
         "checkpoint.checkpoint is 'x@1'"),
        (lambda r: dataclasses.replace(r, run=RunRow("run-9", "benchmark")), "run.run_id is 'run-9'"),
        (lambda r: dataclasses.replace(r, dataset=dataclasses.replace(r.dataset, n_classes=-1)),
         "n_classes must be a non-negative int"),
        (lambda r: dataclasses.replace(r, checkpoint=dataclasses.replace(r.checkpoint, step="200")),
         "step must be an int or None"),
        (lambda r: dataclasses.replace(r, run=("run-1", "benchmark")), "record.run must be a RunRow"),
        (lambda r: dataclasses.replace(r, scores=r.scores.assign(split="train")), "split must be one of"),
    ],
)
def test_bad_records_are_rejected_before_opening_the_file(store, change, message):
    with pytest.raises(StoreValidationError, match=re.escape(message)):
        store.record_evaluation(change(make_record()))
    assert not store.path.exists()
