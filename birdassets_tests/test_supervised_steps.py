"""``birdassets birdclef train`` end to end: a real RNN trained with Keras on every fold of a tiny generated task,
its model folder, DuckDB rows, learning curves and out-of-fold parquet; re-running replaces; user errors."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from birdassets import steps
from birdassets.cli import main
from birdassets.settings import load_settings
from birdassets.sources.demo import DemoTaskSpec, generate
from birdassets.sources.manifest import multi_hot
from birdassets.store import query_readonly
from birdassets.supervised.config import build_configs

pytestmark = pytest.mark.slow
TASK, MODEL, KEY = "mini", "rnn", "birdclef-rnn.mini"
TRAIN_FLAGS = ("--task", TASK, "--model", MODEL, "--debug", "--batch-size", "8")


def run_cli(home, *args: str) -> SimpleNamespace:
    """The real entry point in-process with ``BIRDASSETS_HOME=home``; exit status and captured output."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setenv("BIRDASSETS_HOME", str(home))
        code = main(list(args))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    spec = DemoTaskSpec(name=TASK, seed=5, n_species=4, train_per_species=8, train_length_s=(5.0, 9.0),
                        n_test_windows=8, windows_per_soundscape=4, unlabelled_soundscapes=0)
    generate(spec, home / "mini-data")
    (home / "birdassets.toml").write_text(
        f'include_demo = false\npretrained = []\n[[datasets]]\nname = "{TASK}"\nsource = "birdclef"\n'
        f'root = "{home / "mini-data"}"\n'
    )
    return home


@pytest.fixture(scope="module")
def trained(home):
    """One ``birdclef train`` run (debug: 2 epochs) with the out-of-fold parquet, and what it printed."""
    result = run_cli(home, "birdclef", "train", *TRAIN_FLAGS, "--oof-out", str(home / "oof.parquet"))
    assert result.returncode == 0, result.stderr
    return SimpleNamespace(home=home, settings=load_settings(home), stdout=result.stdout, oof=home / "oof.parquet")


def db(trained, sql: str, params=None) -> pd.DataFrame:
    return query_readonly(trained.settings.layout.db_path, sql, params)


def test_train_saves_a_loadable_keras_model_per_fold_and_says_where(trained):
    import keras  # after birdassets, which runs Keras on JAX

    folder = trained.settings.layout.models_dir(TASK, MODEL)
    assert sorted(p.name for p in folder.glob("*.keras")) == [f"fold_{k}.keras" for k in range(5)]
    model = keras.saving.load_model(folder / "fold_3.keras")
    assert model.output_shape == (None, 4) and model.get_layer("embedding") is not None
    assert str(folder) in trained.stdout
    assert [line.split(":")[0].strip() for line in trained.stdout.splitlines() if "best epoch" in line] == [
        f"fold {k}" for k in range(5)]


def test_duckdb_holds_the_scores_lineage_model_and_epochs(trained):
    scores = db(trained, "select probe, split, count(*) as n from scores where checkpoint = ? group by all "
                "order by all", [KEY])
    assert scores.values.tolist() == [["chance", "test", 5], ["chance", "valid", 5], ["supervised", "test", 20],
                                      ["supervised", "valid", 20]]  # 5 folds x 4 metrics
    model_config, train_config, augment = build_configs(MODEL, debug=True, batch_size=8)
    extra = json.loads(db(trained, "select extra from lineage where checkpoint = ?", [KEY])["extra"][0])
    assert (extra["model_config_hash"], extra["train_config_hash"], extra["augment_hash"]) == (
        model_config.content_hash(), train_config.content_hash(), augment.content_hash())
    assert (extra["model_family"], extra["loss"], extra["epochs"], extra["seed"], extra["debug"]) == (
        "rnn", "bce", 2, 42, True)
    row = db(trained, "select * from supervised_models").iloc[0]
    assert (row["checkpoint"], row["model_family"], row["precision"], row["augmented"], row["epochs"]) == (
        KEY, "rnn", "mixed_bfloat16", True, 2)
    assert row["n_params"] > 0 and row["train_seconds"] > 0
    epochs = db(trained, "select fold, epoch from supervised_epochs order by all")
    assert epochs.values.tolist() == [[fold, epoch] for fold in range(5) for epoch in (1, 2)]


def test_the_oof_parquet_has_one_row_per_validation_window_and_the_stored_aucs(trained):
    oof = pd.read_parquet(trained.oof)
    data = steps.TaskData.load(trained.settings, TASK)
    classes = data.mel.classes()
    assert list(oof.columns) == ["window_id", "fold", *[f"y_{c}" for c in classes], *[f"p_{c}" for c in classes]]
    windows = data.mel.windows()
    train = windows[windows["split"] == "train"].set_index("window_id")
    assert sorted(oof["window_id"]) == sorted(train.index) and oof["window_id"].is_unique
    truth = multi_hot(train.loc[oof["window_id"], "labels"], classes)
    y, p = oof[[f"y_{c}" for c in classes]].to_numpy(), oof[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_array_equal(y, truth)
    assert y.dtype.kind == "i" and p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
    folds = pd.read_parquet(trained.settings.layout.folds_path(TASK)).set_index("window_id")
    np.testing.assert_array_equal(oof["fold"], folds.loc[oof["window_id"], "fold"])
    stored = db(trained, "select fold, value from scores where checkpoint = ? and probe = 'supervised' and "
                "split = 'valid' and metric = 'AUC' order by fold", [KEY])
    for fold, value in zip(stored["fold"], stored["value"], strict=True):
        rows = oof["fold"].to_numpy() == fold
        scored = [c for c in range(len(classes)) if 0 < y[rows, c].sum() < rows.sum()]
        by_hand = np.mean([roc_auc_score(y[rows, c], p[rows, c]) for c in scored])
        assert value == pytest.approx(by_hand, abs=1e-9)


def test_the_supervised_leaderboard_and_the_printed_summary_agree(trained):
    board = db(trained, "select * from supervised_leaderboard").iloc[0]
    valid = db(trained, "select value from scores where checkpoint = ? and probe = 'supervised' and split = "
               "'valid' and metric = 'AUC'", [KEY])["value"]
    assert board["checkpoint"] == KEY and board["auc_mean"] == pytest.approx(valid.mean())
    assert f"class-wise AUC {valid.mean():.4f} ± {valid.std():.4f}" in trained.stdout


def test_re_recording_replaces_every_row_never_duplicates(trained):
    tables = ("scores", "class_scores", "lineage", "datasets", "checkpoints", "supervised_models", "supervised_epochs")
    before = {t: db(trained, f"select * from {t} order by all") for t in tables}
    report = steps.record_supervised(trained.settings, TASK, MODEL, "record-again")
    assert report.score_rows == 50 and report.run_id == before["lineage"]["run_id"][0]  # the training run's
    for table in tables:
        after = db(trained, f"select * from {table} order by all")
        assert len(after) == len(before[table]), table
        columns = [c for c in after.columns if c not in ("created_at", "updated_at")]
        pd.testing.assert_frame_equal(after[columns], before[table][columns], obj=table)


@pytest.mark.parametrize(("flags", "message"), [
    (("--task", "nosuch", "--model", "rnn"), "unknown data set 'nosuch'"),
    (("--task", TASK, "--model", "gru"), "model must be one of ('cnn', 'rnn', 'vit'), got 'gru'"),
    (("--task", TASK, "--model", "rnn", "--init-checkpoint", "demo-sup@200"),
     "init_checkpoint initialises the vit family only, not 'rnn'"),
    (("--task", TASK, "--model", "rnn", "--epochs", "0"), "epochs must be a positive integer, got 0"),
    (("--task", TASK, "--model", "rnn", "--oof-out", "oof.csv"), "--oof-out oof.csv: out-of-fold predictions "
     "are written as .parquet"),
    (("--task", TASK, "--model", "rnn", "--oof-out", "/no/such/folder/oof.parquet"),
     "folder /no/such/folder does not exist"),
    (("--task", TASK, "--model", "rnn", "--batch-size", "4096"),
     "trains on fewer windows than one batch (4096); lower --batch-size"),
])
def test_user_errors_are_one_line_and_exit_2(home, flags, message):
    result = run_cli(home, "birdclef", "train", *flags)
    assert result.returncode == 2  # at most the heading reached stdout (a fold too small is found once training starts)
    assert result.stdout == "" or result.stdout.count("\n") == 1 and result.stdout.startswith(f"training rnn on {TASK}")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("birdassets birdclef train: ")
    assert message in result.stderr
