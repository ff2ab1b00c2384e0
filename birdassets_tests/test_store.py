"""Tests of birdassets.store on real DuckDB files in tmp_path."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pandas as pd
import pytest

from birdassets.store import (
    SCHEMA_VERSION,
    Lineage,
    MetricsStore,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreValidationError,
    format_frame,
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
    assert SCHEMA_VERSION == 3 and count(store, "quarantine") == 1
    assert count(store, "detections") == 0 and count(store, "detection_files") == 0  # version 3 tables too
