"""Kaggle submissions from a supervised model folder: row ids, columns, fold averaging, the CLI and its speed bench.

Real files throughout: OGG/WAV soundscapes on disk, a model folder of real ``.keras`` fold models (tiny RNNs built
with the project's ``build_model``, never trained), a real DuckDB file for ``bench submission``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import birdassets  # noqa: F401  (Keras on JAX, before keras is imported)
from birdassets.frontends.presets import get_preset
from birdassets.layout import Layout
from birdassets.speed import bench_signal
from birdassets.supervised.submission import (
    ROW_ID,
    align_columns,
    predict_soundscapes,
    soundscape_windows,
    submission_class_order,
    write_submission,
)

PRESET = get_preset("birdclef2025")
CLASSES = ("aaa", "bbb", "ccc")
N_FOLDS = 2
TASK = "demo-clear"  # a configured task whose preset is birdclef2025; its data folder is never generated here


def _write_model_folder(folder: Path) -> Path:
    """A model folder written by the project's own writer: ``N_FOLDS`` tiny RNNs (built with ``build_model``, random
    weights, different per fold, never trained) and the records training keeps beside them."""
    import keras

    from birdassets.supervised.model_folder import write_model_folder
    from birdassets.supervised.config import ModelConfig, model_key
    from birdassets.supervised.architectures import build_model

    config = ModelConfig(family="rnn", rnn_units=4, rnn_mels=8, dropout=0.0)
    models = []
    for fold in range(N_FOLDS):
        keras.utils.set_random_seed(fold)
        models.append(build_model(config, PRESET.input_shape, len(CLASSES)))
    rows, c = 4, len(CLASSES)
    result = SimpleNamespace(
        classes=CLASSES, input_shape=PRESET.input_shape, n_folds=N_FOLDS, n_params=models[0].count_params(),
        precision="float32", seconds=0.0, best_epochs=[0] * N_FOLDS, models=models,
        fold_of=np.arange(rows) % N_FOLDS, y_train=np.zeros((rows, c), np.uint8), valid_scores=np.zeros((rows, c)),
        y_test=np.zeros((1, c), np.uint8), test_scores=np.zeros((N_FOLDS, 1, c)),
        history=pd.DataFrame({"fold": [0], "epoch": [0], "train_loss": [0.0], "val_loss": [0.0], "val_auc": [0.5],
                              "seconds": [0.0]}),
        train_window_ids=[f"w{i}" for i in range(rows)],
    )
    record = {"key": model_key("rnn", TASK), "task": TASK, "model": "rnn", "preset": PRESET.name,
              "preset_hash": PRESET.content_hash(), "sample_rate": PRESET.sample_rate, "clip_s": PRESET.clip_s}
    return write_model_folder(folder, result, record)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_model_folder(tmp_path_factory.mktemp("models") / "rnn")


@pytest.fixture(scope="module")
def soundscapes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A 60-s OGG and a 62-s WAV soundscape at the preset's rate."""
    folder = tmp_path_factory.mktemp("soundscapes")
    a, b = folder / "site1_0001.ogg", folder / "site2_0002.wav"
    sf.write(a, bench_signal(60.0, PRESET.sample_rate, seed=1), PRESET.sample_rate, format="OGG", subtype="VORBIS")
    sf.write(b, bench_signal(62.0, PRESET.sample_rate, seed=2), PRESET.sample_rate)
    return [a, b]


def test_row_ids_are_window_ends_with_the_presets_partial_window_rule(tmp_path: Path, soundscapes) -> None:
    short = tmp_path / "tail.wav"
    sf.write(short, bench_signal(60.5, PRESET.sample_rate), PRESET.sample_rate)  # 0.5 s tail < min_last_s: dropped
    row_ids, starts = soundscape_windows([*soundscapes, short], PRESET)
    assert PRESET.min_last_s == 1.0 and PRESET.clip_s == PRESET.hop_s == 5.0
    expected = ([f"site1_0001_{5 * k}" for k in range(1, 13)] + [f"site2_0002_{5 * k}" for k in range(1, 14)]
                + [f"tail_{5 * k}" for k in range(1, 13)])
    assert row_ids == expected  # the 62-s file's 2-s tail is a zero-padded window ending at 65 s
    np.testing.assert_array_equal(starts, np.r_[np.arange(12) * 5.0, np.arange(13) * 5.0, np.arange(12) * 5.0])


def _reference(model_dir: Path, paths: list[Path]) -> np.ndarray:
    """Mean over the fold models of sigmoid(logits), computed independently: soundfile decode, numpy windows,
    each fold model loaded with plain Keras and called on the whole file's windows."""
    import keras

    from birdassets.frontends.tf_mel import TFMelFrontend

    frontend = TFMelFrontend(PRESET)
    mels = []
    for path in paths:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == PRESET.sample_rate
        padded = np.zeros(int(np.ceil(len(audio) / PRESET.clip_samples)) * PRESET.clip_samples, np.float32)
        padded[: len(audio)] = audio
        mels.append(frontend.model_input(padded.reshape(-1, PRESET.clip_samples)).numpy())
    mel = np.concatenate(mels)
    folds = [keras.saving.load_model(model_dir / f"fold_{k}.keras") for k in range(N_FOLDS)]
    per_fold = [1.0 / (1.0 + np.exp(-np.asarray(m(mel, training=False), np.float64))) for m in folds]
    assert np.abs(per_fold[0] - per_fold[1]).max() > 1e-3  # the folds differ, so averaging is checked
    return np.mean(per_fold, axis=0)


def test_predictions_average_the_fold_models_over_batches_filled_across_files(model_dir: Path, soundscapes) -> None:
    frame = predict_soundscapes(model_dir, soundscapes, batch_size=8)  # 25 windows: 3 full batches + 1 padded
    assert list(frame.columns) == [ROW_ID, *CLASSES]
    assert len(frame) == 12 + 13 and frame[ROW_ID].is_unique
    assert frame[ROW_ID].iloc[11] == "site1_0001_60" and frame[ROW_ID].iloc[-1] == "site2_0002_65"
    values = frame[list(CLASSES)].to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0
    np.testing.assert_allclose(values, _reference(model_dir, soundscapes), rtol=0, atol=1e-6)


def test_columns_follow_the_sample_submission(tmp_path: Path) -> None:
    frame = pd.DataFrame({ROW_ID: ["x_5", "x_10"], "aaa": [0.1, 0.2], "bbb": [0.3, 0.4], "ccc": [0.5, 0.6]})
    assert submission_class_order(tmp_path, CLASSES) == list(CLASSES)  # no sample submission: the task's order
    (tmp_path / "sample_submission.csv").write_text("row_id,ccc,zzz,aaa\nx_5,0,0,0\n")
    order = submission_class_order(tmp_path, CLASSES)
    assert order == ["ccc", "zzz", "aaa"]
    notices = write_submission(frame, tmp_path / "submission.csv", order)
    written = pd.read_csv(tmp_path / "submission.csv")
    assert list(written.columns) == ["row_id", "ccc", "zzz", "aaa"]
    assert written["zzz"].tolist() == [0.0, 0.0] and written["ccc"].tolist() == [0.5, 0.6]
    assert len(notices) == 2 and "zzz" in notices[0] and "0.0" in notices[0] and "bbb" in notices[1]
    assert align_columns(frame, CLASSES)[1] == []  # the same classes: nothing to say
    (tmp_path / "sample_submission.csv").write_text("id,aaa\n")
    with pytest.raises(ValueError, match="row_id"):
        submission_class_order(tmp_path, CLASSES)


@pytest.fixture
def home_with_model(cli, tmp_path: Path, model_dir: Path) -> Path:
    """A ``BIRDASSETS_HOME`` (the one ``cli`` uses) holding the model folder as ``rnn`` of the task."""
    home = Layout(tmp_path / "home")
    shutil.copytree(model_dir, home.models_dir(TASK, "rnn"))
    return home.home


def test_cli_submit_writes_every_readable_soundscape_and_names_the_bad_one(
    cli, tmp_path: Path, home_with_model: Path, soundscapes
) -> None:
    folder = tmp_path / "test_soundscapes"
    folder.mkdir()
    for path in soundscapes:
        shutil.copy(path, folder / path.name)
    (folder / "broken.ogg").write_bytes(b"OggS" + bytes(200))  # undecodable
    data = Layout(home_with_model).demo_data(TASK)
    data.mkdir(parents=True)
    (data / "sample_submission.csv").write_text("row_id,ccc,bbb,aaa,zzz\n")
    out = tmp_path / "submission.csv"
    result = cli("birdclef", "submit", "--task", TASK, "--model", "rnn", "--soundscapes", str(folder),
                 "--out", str(out))
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert [line for line in errors if "broken.ogg" in line] and "zzz" in result.stderr and "Traceback" not in result.stderr
    written = pd.read_csv(out)
    assert list(written.columns) == ["row_id", "ccc", "bbb", "aaa", "zzz"]
    assert len(written) == 25 and written["row_id"].iloc[0] == "site1_0001_5" and (written["zzz"] == 0).all()
    assert written[["aaa", "bbb", "ccc"]].stack().between(0, 1).all()


def test_cli_submit_user_errors_are_one_line(cli, tmp_path: Path, home_with_model: Path, soundscapes) -> None:
    folder, empty = tmp_path / "scapes", tmp_path / "empty"
    folder.mkdir()
    empty.mkdir()
    shutil.copy(soundscapes[0], folder / soundscapes[0].name)
    base = ("birdclef", "submit", "--task", TASK)
    cases = {
        "birdassets birdclef train --task demo-clear --model cnn": (
            *base, "--model", "cnn", "--soundscapes", str(folder), "--out", str(tmp_path / "s.csv")),
        "no such folder": (*base, "--model", "rnn", "--soundscapes", str(tmp_path / "nope"), "--out", "s.csv"),
        "no audio files": (*base, "--model", "rnn", "--soundscapes", str(empty), "--out", "s.csv"),
        "does not exist": (*base, "--model", "rnn", "--soundscapes", str(folder),
                           "--out", str(tmp_path / "missing" / "s.csv")),
        "unknown data set 'nosuch'": ("birdclef", "submit", "--task", "nosuch", "--model", "rnn",
                                      "--soundscapes", str(folder), "--out", "s.csv"),
        "was trained on preset 'birdclef2025'": (*base, "--model", "vit", "--soundscapes", str(folder),
                                                 "--out", str(tmp_path / "s.csv")),
    }
    other = Layout(home_with_model).models_dir(TASK, "vit")  # a model trained under other preset parameters
    shutil.copytree(Layout(home_with_model).models_dir(TASK, "rnn"), other)
    record = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**record, "preset_hash": "0" * 64}))
    for message, args in cases.items():
        result = cli(*args)
        assert result.returncode == 2, (message, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "s.csv").exists()


def test_bench_submission_stores_its_figure_in_duckdb(cli, home_with_model: Path) -> None:
    import duckdb

    from birdassets.speed import KAGGLE_SOUNDSCAPE_S, KAGGLE_TEST_SOUNDSCAPES

    result = cli("bench", "submission", "--task", TASK, "--model", "rnn", "--seconds", "70", "--repeats", "1",
                 "--batch-size", "16")
    assert result.returncode == 0, result.stderr
    assert "audio s per s" in result.stdout and "90-minute CPU limit" in result.stdout
    with duckdb.connect(str(Layout(home_with_model).db_path), read_only=True) as con:
        rows = con.execute("SELECT task, checkpoint, audio_s_per_s, projected_s, soundscapes, audio_seconds, "
                           "n_folds, batch_size FROM submission_speed").fetchall()
    assert len(rows) == 1
    task, checkpoint, speed, projected, count, seconds, folds, batch = rows[0]
    # 70 s: a 60-s and a 10-s soundscape, 12 + 2 windows, fewer than --batch-size: one batch of 14
    assert (task, checkpoint, count, seconds, folds, batch) == (TASK, "birdclef-rnn.demo-clear", 2, 70.0, 2, 14)
    assert speed > 0 and projected == pytest.approx(KAGGLE_TEST_SOUNDSCAPES * KAGGLE_SOUNDSCAPE_S / speed)
    assert cli("bench", "submission", "--task", TASK).returncode == 2  # --model missing: one line, exit 2
