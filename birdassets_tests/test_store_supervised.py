"""Schema version 4 of the metrics store: supervised models, their epochs, submission speed, on real DuckDB files."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from birdassets.store import (
    SCHEMA_VERSION,
    CheckpointRow,
    DatasetRow,
    EvaluationRecord,
    MetricsStore,
    RunRow,
    StoreError,
    StoreValidationError,
)
from birdassets.store import schema, statements, validation
from birdassets.store.connection import utc_now
from birdassets_tests.test_store import make_class_scores, make_lineage, make_scores

KEY = "birdclef-rnn.HSN"
FOLDS, EPOCHS = 5, 3
SUPERVISED_TABLES = ("supervised_models", "supervised_epochs", "submission_speed")


def model_row(**overrides) -> dict:
    row = dict(model_family="rnn", model_config_hash="m" * 64, augment_hash="a" * 64, train_config_hash="t" * 64,
               loss="bce", precision="mixed_bfloat16", epochs=EPOCHS, seed=np.int64(42), debug=True, augmented=True,
               n_params=12345, train_seconds=3.5)
    return {**row, **overrides}


def history(epochs: int = EPOCHS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product([range(FOLDS), range(epochs)], names=["fold", "epoch"]).to_frame(index=False)
    n = len(index)
    return index.assign(train_loss=rng.random(n), val_loss=rng.random(n), val_auc=rng.random(n), seconds=rng.random(n))


def record(seed: int = 0, run_id: str = "run-1", checkpoint: str = KEY) -> EvaluationRecord:
    lineage = make_lineage(checkpoint, run_id=run_id, encoder_family="keras")
    return EvaluationRecord(
        lineage=lineage, scores=make_scores(seed, probes=("supervised",)),
        class_scores=make_class_scores(seed, probes=("supervised",)),
        dataset=DatasetRow("HSN", "birdset", "/data/hsn", lineage.manifest_hash, 100, 3),
        checkpoint=CheckpointRow(checkpoint, checkpoint, None, f"/models/{checkpoint}", "keras"),
        run=RunRow(run_id, "supervised", "HSN x rnn"),
    )


def speed_row(**overrides) -> dict:
    return {**dict(audio_s_per_s=250.0, projected_s=1008.0, soundscapes=4, audio_seconds=240.0, n_folds=5,
                   batch_size=16), **overrides}


def rows(store: MetricsStore, table: str) -> pd.DataFrame:
    return store.query(f"SELECT * FROM {table} ORDER BY ALL")


@pytest.fixture
def store(tmp_path) -> MetricsStore:
    return MetricsStore(tmp_path / "home" / "birdassets.duckdb", lock_timeout_s=30)


def test_record_supervised_writes_the_model_its_epochs_and_scores_and_re_recording_replaces(store):
    written = store.record_supervised(record(seed=0), model_row(), history(seed=0))
    assert written == FOLDS * 2 * 4  # folds x splits x metrics
    assert len(rows(store, "supervised_epochs")) == FOLDS * EPOCHS
    store.record_supervised(record(seed=1, run_id="run-2"), model_row(epochs=2, train_seconds=7.0),
                            history(epochs=2, seed=1))
    models, epochs = rows(store, "supervised_models"), rows(store, "supervised_epochs")
    assert len(models) == 1 and models.loc[0, ["epochs", "train_seconds", "run_id", "seed"]].tolist() == [2, 7.0,
                                                                                                       "run-2", 42]
    assert len(epochs) == FOLDS * 2 and set(epochs["run_id"]) == {"run-2"}  # the 3rd epoch of run-1 is gone
    expected = history(epochs=2, seed=1)
    np.testing.assert_allclose(epochs["val_auc"], expected.sort_values(["fold", "epoch"])["val_auc"])
    for table, n in (("scores", FOLDS * 2 * 4), ("lineage", 1), ("checkpoints", 1), ("runs", 2)):
        assert len(rows(store, table)) == n, table


def test_the_supervised_leaderboard_shows_valid_auc_cmap_and_speed(store):
    store.record_supervised(record(seed=3), model_row(), history())
    scores = make_scores(3, probes=("supervised",))
    valid = scores[scores["split"] == "valid"]
    board = rows(store, "supervised_leaderboard").iloc[0]
    auc, cmap = (valid.loc[valid["metric"] == m, "value"].to_numpy() for m in ("AUC", "cmAP"))
    assert board["auc_mean"] == pytest.approx(auc.mean()) and board["auc_std"] == pytest.approx(auc.std(ddof=1))
    assert board["cmap_mean"] == pytest.approx(cmap.mean()) and board["n_folds"] == FOLDS
    assert pd.isna(board["audio_s_per_s"])  # not timed yet
    store.record_submission_speed("HSN", KEY, speed_row(), "bench-1")
    store.record_submission_speed("HSN", KEY, speed_row(audio_s_per_s=300.0, soundscapes=np.int64(6)), "bench-2")
    speed = rows(store, "submission_speed")
    assert len(speed) == 1 and speed.loc[0, ["audio_s_per_s", "soundscapes", "run_id"]].tolist() == [300.0, 6,
                                                                                                     "bench-2"]
    assert rows(store, "supervised_leaderboard").loc[0, "audio_s_per_s"] == 300.0


class FailAt:
    """A real connection that raises before the first statement starting with ``prefix``."""

    def __init__(self, con, prefix: str) -> None:
        self.con, self.prefix = con, prefix

    def execute(self, sql, *params):
        if " ".join(sql.split()).startswith(self.prefix):
            raise duckdb.IOException(f"injected before {self.prefix}")
        return self.con.execute(sql, *params)

    def __getattr__(self, name):
        return getattr(self.con, name)


@pytest.mark.parametrize("prefix", ["INSERT INTO supervised_models", "DELETE FROM supervised_epochs",
                                    "INSERT INTO supervised_epochs"])
def test_a_failure_inside_record_supervised_changes_nothing(store, prefix):
    store.record_supervised(record(seed=0), model_row(), history(seed=0))
    before = {t: rows(store, t) for t in ("scores", "lineage", "runs", "supervised_models", "supervised_epochs")}
    failing = MetricsStore(store.path, wrap_connection=lambda con: FailAt(con, prefix))
    with pytest.raises(StoreError, match="rolled back"):
        failing.record_supervised(record(seed=5, run_id="run-9"), model_row(epochs=1), history(epochs=1, seed=5))
    for table, frame in before.items():
        pd.testing.assert_frame_equal(rows(store, table), frame, obj=table)


BAD_MODEL_ROWS = [
    (dict(epochs=0), r"model_row.epochs must be an int > 0, got 0"),
    (dict(debug=1), r"model_row.debug must be a bool, got 1"),
    (dict(train_seconds=float("nan")), r"model_row.train_seconds must be a finite number >= 0"),
    (dict(loss=""), r"model_row.loss must be a non-empty str"),
    (dict(colour="red"), r"has unknown \['colour'\]"),
]


@pytest.mark.parametrize(("change", "message"), BAD_MODEL_ROWS)
def test_bad_model_rows_are_rejected_before_the_file_is_opened(store, change, message):
    with pytest.raises(StoreValidationError, match=message):
        store.record_supervised(record(), model_row(**change), history())
    assert not store.path.exists()


def _bad_history(kind: str) -> pd.DataFrame:
    frame = history()
    if kind == "duplicate":
        return pd.concat([frame, frame.iloc[[4]]])
    if kind == "empty":
        return frame.iloc[:0]
    if kind == "missing":
        return frame.drop(columns="val_auc")
    column, value = {"auc": ("val_auc", 1.5), "inf": ("train_loss", np.inf), "seconds": ("seconds", -1.0),
                     "fold": ("fold", -1)}[kind]
    frame.loc[2, column] = value
    return frame


@pytest.mark.parametrize(("kind", "message"), [
    ("duplicate", r"a repeated \(fold, epoch\) in 1 row\(s\): fold=1, epoch=1"),
    ("empty", "epochs is empty"),
    ("missing", r"epochs lacks column\(s\) \['val_auc'\]"),
    ("auc", r"val_auc outside \[0, 1\] in 1 row"),
    ("inf", "epochs.train_loss is infinite in 1 row"),
    ("seconds", "seconds missing or negative"),
    ("fold", "epochs.fold must hold non-negative integers"),
])
def test_bad_histories_are_rejected_before_the_file_is_opened(store, kind, message):
    with pytest.raises(StoreValidationError, match=message):
        store.record_supervised(record(), model_row(), _bad_history(kind))
    assert not store.path.exists()


def test_an_undefined_auc_or_loss_is_stored_as_null(store):
    frame = history()
    frame.loc[0, ["val_auc", "val_loss"]] = np.nan
    store.record_supervised(record(), model_row(), frame)
    nulls = store.query("SELECT count(*) - count(val_auc) AS auc, count(*) - count(val_loss) AS loss "
                        "FROM supervised_epochs")
    assert nulls.iloc[0].tolist() == [1, 1]


@pytest.mark.parametrize(("change", "message"), [
    (dict(audio_s_per_s=0.0), "row.audio_s_per_s must be a finite number > 0"),
    (dict(n_folds=2.5), "row.n_folds must be an int > 0"),
    (dict(projected_s=float("inf")), "row.projected_s must be a finite number >= 0"),
])
def test_bad_submission_speeds_are_rejected_before_the_file_is_opened(store, change, message):
    with pytest.raises(StoreValidationError, match=message):
        store.record_submission_speed("HSN", KEY, speed_row(**change), "bench-1")
    with pytest.raises(StoreValidationError, match="row lacks"):
        store.record_submission_speed("HSN", KEY, {"audio_s_per_s": 1.0}, "bench-1")
    assert not store.path.exists()


def test_a_version_3_file_gains_the_supervised_tables_and_keeps_its_rows(store):
    """A file exactly as version 3 wrote it (its statements only, an evaluation written by the same statements)."""
    store.path.parent.mkdir(parents=True)
    old = record(checkpoint="demo-vit@200")
    with duckdb.connect(str(store.path)) as con:
        for statement in schema.SCHEMA_SQL:
            if statement not in schema.VERSION_4_SQL + schema.VERSION_5_SQL:
                con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (3, now())")
        _, scores, class_scores = validation.prepare_record(old, store.path)
        statements.write_record(con, old, scores, class_scores, utc_now())
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert not tables & {*SUPERVISED_TABLES, "supervised_leaderboard", "exports"}
    store.record_supervised(record(), model_row(), history())
    assert store.query("SELECT version FROM schema_version ORDER BY version")["version"].tolist() == [3, 5]
    assert SCHEMA_VERSION == 5 and len(rows(store, "exports")) == 0
    counts = store.query("SELECT checkpoint, count(*) AS n FROM scores GROUP BY checkpoint ORDER BY checkpoint")
    assert counts.values.tolist() == [[KEY, 40], ["demo-vit@200", 40]]
    assert len(rows(store, "supervised_leaderboard")) == 1 and len(rows(store, "supervised_epochs")) == FOLDS * EPOCHS
