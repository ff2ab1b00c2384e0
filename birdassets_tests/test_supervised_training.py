"""Supervised training on a small real task: tf.data folds, one compile across folds, best-epoch selection, OOF
determinism, the model folder.

The task is generated (6 species, ~30 training windows, 10 test windows), ingested, turned into the real TFDS
mel dataset and folded by the real steps; the RNN family (2 x GRU(16)) trains 2 epochs per fold on CPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from birdassets import steps
from birdassets.artifacts import fold_assignment
from birdassets.metrics import class_wise_auc
from birdassets.settings import load_settings
from birdassets.sources.demo import DemoTaskSpec, generate
from birdassets.supervised.config import AugmentConfig, ModelConfig, SupervisedConfig

pytestmark = pytest.mark.slow
TASK = "mini"
BATCH = 8
MODEL = ModelConfig(family="rnn", rnn_units=16, rnn_mels=32, dropout=0.1)
CONFIG = SupervisedConfig(epochs=2, batch_size=BATCH, precision="float32", learning_rate=3e-3)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """``(mel dataset, fold_of [train windows], folds path)`` of a freshly built small task."""
    home = tmp_path_factory.mktemp("home")
    spec = DemoTaskSpec(name=TASK, seed=11, n_species=6, train_per_species=4, train_length_s=(3.0, 7.0),
                        n_test_windows=10, windows_per_soundscape=5)
    generate(spec, home / "mini-data")
    (home / "birdassets.toml").write_text(
        f'include_demo = false\ncheckpoint_roots = []\nprobes = ["linear"]\npretrained = []\n'
        f'[[datasets]]\nname = "{TASK}"\nsource = "birdclef"\nroot = "{home / "mini-data"}"\n'
    )
    settings = load_settings(home)
    steps.ingest(settings, TASK, run_id="run-1")
    dataset = steps.build_mel(settings, TASK).dataset
    folds = steps.make_folds(settings, TASK)
    windows = dataset.windows()
    train_ids = windows.loc[windows["split"] == "train", "window_id"].reset_index(drop=True)
    return dataset, fold_assignment(folds.path, train_ids), folds.path


def train(task, config: SupervisedConfig = CONFIG, fold_of=None, augment: AugmentConfig | None = None):
    from birdassets.supervised.cross_validation import train_folds

    dataset, folds, _ = task
    lines: list[str] = []
    result = train_folds(dataset, folds if fold_of is None else fold_of, MODEL, config,
                         augment or AugmentConfig(), log=lines.append)
    return result, lines


@pytest.fixture(scope="module")
def trained_twice(task):
    """Two trainings in a row: the first builds and compiles its session, the second reuses it."""
    from birdassets.supervised.cross_validation import release_sessions

    release_sessions()
    return train(task), train(task)


@pytest.fixture(scope="module")
def trained(trained_twice):
    return trained_twice[0]


@pytest.fixture(scope="module")
def trained_again(trained_twice):
    return trained_twice[1]


def fingerprints(batches) -> np.ndarray:
    """``[windows]`` float64 sum of each window's mel (distinct windows have distinct sums)."""
    return np.concatenate([np.asarray(b, np.float64).sum(axis=(1, 2)) for b in batches])


# --------------------------------------------------------------------------------------------- data


def test_the_debug_cap_draws_a_seeded_sorted_subset():
    from birdassets.supervised.fold_data import select_training_rows

    rows = select_training_rows(31, 20, seed=42)
    assert len(rows) == 20 and len(set(rows)) == 20 and np.all(np.diff(rows) > 0) and rows.max() < 31
    np.testing.assert_array_equal(rows, select_training_rows(31, 20, seed=42))
    assert not np.array_equal(rows, select_training_rows(31, 20, seed=43))
    np.testing.assert_array_equal(select_training_rows(31, None, seed=42), np.arange(31))
    np.testing.assert_array_equal(select_training_rows(31, 1000, seed=42), np.arange(31))


@pytest.mark.parametrize("source", ["streamed", "in memory"])
def test_a_folds_pipelines_read_exactly_its_windows(task, source):
    from birdassets.supervised.fold_data import SplitArrays, fold_datasets, prediction_pipeline, select_training_rows

    dataset, fold_of, _ = task
    in_memory = SplitArrays.read_if_small(dataset) if source == "in memory" else None
    assert (in_memory is None) == (source == "streamed") and SplitArrays.read_if_small(dataset, max_bytes=0) is None
    every = fingerprints(prediction_pipeline(dataset, "train", None, BATCH).as_numpy_iterator())[:len(fold_of)]
    assert len(np.unique(every)) == len(fold_of)  # the fingerprint identifies a window
    rows = select_training_rows(len(fold_of), 25, seed=42)  # a debug cap: the other 6 windows are never read
    data = fold_datasets(dataset, rows, fold_of, 1, 4, AugmentConfig.off(), seed=42, epochs=2, in_memory=in_memory)
    assert set(data.train_rows) | set(data.valid_rows) == set(rows) and not set(data.train_rows) & set(data.valid_rows)
    assert np.all(fold_of[data.valid_rows] == 1) and np.all(fold_of[data.train_rows] != 1)
    batches = [(mel, labels) for mel, labels in data.train.as_numpy_iterator()]
    assert all(mel.shape == (4, *dataset.builder().info.features["mel"].shape) for mel, _ in batches)
    assert batches[0][1].dtype == np.float32
    seen = fingerprints(mel for mel, _ in batches)
    assert len(seen) == 2 * len(data.train_rows) // 4 * 4 and set(seen) <= set(every[data.train_rows])
    first, second = seen[:len(data.train_rows)], seen[len(data.train_rows):2 * len(data.train_rows)]
    assert not np.array_equal(first, second)  # reshuffled each epoch ...
    again = fold_datasets(dataset, rows, fold_of, 1, 4, AugmentConfig.off(), seed=42, epochs=2, in_memory=in_memory)
    np.testing.assert_array_equal(fingerprints(m for m, _ in again.train.as_numpy_iterator()), seen)  # ... seeded
    valid = list(data.valid.as_numpy_iterator()) if in_memory is None else np.split(data.valid, len(data.valid) // 4)
    assert all(batch.shape[0] == 4 for batch in valid)  # padded to the batch size
    padded = fingerprints(valid)
    np.testing.assert_allclose(padded[:len(data.valid_rows)], every[data.valid_rows], rtol=1e-12)
    assert np.all(padded[len(data.valid_rows):] == 0)


def test_folds_out_of_step_with_the_dataset_are_refused(task):
    from birdassets.supervised.fold_data import SupervisedDataError, fold_datasets

    dataset, fold_of, _ = task
    with pytest.raises(SupervisedDataError, match="folds cover 30 training windows"):
        fold_datasets(dataset, np.arange(30), fold_of[:30], 0, BATCH, AugmentConfig.off(), seed=1, epochs=1)
    with pytest.raises(SupervisedDataError, match="fold 0 has .* training"):
        fold_datasets(dataset, np.arange(len(fold_of)), fold_of, 0, 64, AugmentConfig.off(), seed=1, epochs=1)


# ----------------------------------------------------------------------------------------- training


def test_the_same_seed_gives_bit_identical_predictions_and_another_seed_does_not(task, trained, trained_again):
    first, second = trained[0], trained_again[0]
    np.testing.assert_array_equal(first.valid_scores, second.valid_scores)
    np.testing.assert_array_equal(first.test_scores, second.test_scores)
    pd.testing.assert_frame_equal(first.history.drop(columns="seconds"), second.history.drop(columns="seconds"))
    other = train(task, dataclasses.replace(CONFIG, seed=43))[0]
    assert np.abs(other.valid_scores - first.valid_scores).max() > 1e-3
    assert np.abs(other.test_scores - first.test_scores).max() > 1e-3


def test_training_leaves_the_data_order_of_later_pipelines_alone(task):
    """Keras seeds TensorFlow globally; a seed left behind would reorder every later seeded tf.data shuffle
    (here the Flax training stream) in the same process."""
    import tensorflow as tf
    from birdassets.train.stream import training_stream

    dataset, folds, _ = task
    keep = np.ones(len(folds), dtype=bool)
    first_batch = lambda: fingerprints([next(training_stream(dataset, keep, BATCH, seed=3))["mel"]])  # noqa: E731
    tf.random.set_seed(None)
    before = first_batch()
    train(task, SupervisedConfig(epochs=1, batch_size=BATCH, precision="float32"), fold_of=folds % 2)
    np.testing.assert_array_equal(first_batch(), before)


def test_the_result_has_one_out_of_fold_row_per_training_window(task, trained):
    result, lines = trained
    dataset, fold_of, folds_path = task
    n, classes = len(fold_of), len(dataset.classes())
    assert result.valid_scores.shape == result.y_train.shape == (n, classes) and result.fold_of.shape == (n,)
    assert result.test_scores.shape == (5, 10, classes) and result.y_test.shape == (10, classes)
    assert result.valid_scores.dtype == np.float32 and result.y_train.dtype == np.float32
    for scores in (result.valid_scores, result.test_scores):
        assert np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1
    np.testing.assert_array_equal(result.fold_of, fold_assignment(folds_path, pd.Series(result.train_window_ids)))
    assert result.y_train.sum() >= n and set(np.unique(result.y_train)) == {0.0, 1.0}
    assert list(result.history.columns) == ["fold", "epoch", "train_loss", "val_loss", "val_auc", "seconds"]
    assert list(zip(result.history["fold"], result.history["epoch"])) == [(f, e) for f in range(5) for e in (1, 2)]
    assert np.isfinite(result.history[["train_loss", "val_loss", "val_auc"]].to_numpy()).all()
    assert len(result.models) == 5 and result.precision == "float32" and result.n_params > 1000
    assert len(lines) == 10 and lines[0].startswith(f"{TASK}: fold 0 epoch 1/2: train_loss ")


def test_each_oof_row_comes_from_the_model_that_did_not_train_on_it(task, trained):
    import keras

    from birdassets.supervised.fold_data import prediction_pipeline

    result, _ = trained
    dataset, fold_of, _ = task
    probe = keras.models.clone_model(result.models[0])  # one compiled predict function, each fold's weights in turn
    for fold, model in enumerate(result.models):
        mask = fold_of == fold
        batches = prediction_pipeline(dataset, "train", mask, BATCH)
        probe.set_weights(result.models[(fold + 1) % 5].get_weights())  # another fold's model ...
        other = probe.predict(batches, verbose=0)[:mask.sum()]
        assert np.abs(1 / (1 + np.exp(-other.astype(np.float64))) - result.valid_scores[mask]).max() > 1e-4
        probe.set_weights(model.get_weights())  # ... and the fold's own
        logits = probe.predict(batches, verbose=0)[:mask.sum()]
        np.testing.assert_allclose(result.valid_scores[mask], 1 / (1 + np.exp(-logits.astype(np.float64))),
                                   atol=1e-6)


def test_each_fold_keeps_its_epoch_with_the_best_validation_auc(trained):
    result, _ = trained
    for fold, best in enumerate(result.best_epochs):
        history = result.history[result.history["fold"] == fold]
        aucs = history["val_auc"].to_numpy()
        assert best == int(np.argmax(aucs)) + 1  # argmax: the first of equal values (ties keep the earlier epoch)
        rows = result.fold_of == fold
        recomputed = class_wise_auc(result.y_train[rows], result.valid_scores[rows]).value
        assert recomputed == pytest.approx(aucs[best - 1], abs=1e-9)
    assert set(result.best_epochs) == {1, 2}  # both outcomes occur on this task, so the choice is exercised


def test_the_compiled_step_functions_are_reused_across_folds_and_trainings(trained, trained_again):
    assert trained[0].session_compiles == 2  # train_step and predict_step, compiled with the session ...
    assert trained_again[0].session_compiles == 0  # ... which the same model again reuses
    for result, _ in (trained, trained_again):
        assert result.compiles == (0, 0, 0, 0, 0)  # no fold re-traces them


def test_streamed_windows_train_exactly_like_windows_in_memory(task, trained, monkeypatch):
    """A one-shard dataset streams its windows in the order the arrays hold them: the same seed then gives the
    same model, and neither source re-traces a step function inside a fold."""
    from birdassets.supervised import fold_data
    from birdassets.supervised.cross_validation import release_sessions

    monkeypatch.setattr(fold_data, "IN_MEMORY_BYTES", 0)
    release_sessions()  # a fresh session
    streamed = train(task)[0]
    np.testing.assert_array_equal(streamed.valid_scores, trained[0].valid_scores)
    np.testing.assert_array_equal(streamed.test_scores, trained[0].test_scores)
    assert streamed.session_compiles == 2 and streamed.compiles == (0, 0, 0, 0, 0)


def test_a_session_is_reused_only_for_the_very_same_build(task):
    from birdassets.supervised.cross_validation import FoldPlan, session_key

    dataset, fold_of, _ = task
    plan, shape = FoldPlan.make(dataset, fold_of, CONFIG), (256, 256)
    key = session_key(MODEL, CONFIG, shape, plan)
    assert key == session_key(MODEL, dataclasses.replace(CONFIG), shape, plan)
    assert key != session_key(MODEL, dataclasses.replace(CONFIG, seed=43), shape, plan)  # other initial weights
    assert key != session_key(dataclasses.replace(MODEL, rnn_units=8), CONFIG, shape, plan)
    assert key != session_key(MODEL, CONFIG, (128, 256), plan)
    assert key != session_key(MODEL, CONFIG, shape, dataclasses.replace(plan, steps=(1, 1, 1, 1, 1)))  # schedule
    vit = ModelConfig(family="vit", init_checkpoint="run@100")
    assert session_key(vit, CONFIG, shape, plan) is None  # the checkpoint's files may change between calls


def test_the_debug_cap_class_weights_and_focal_loss_train_end_to_end(task):
    dataset, fold_of, _ = task
    config = SupervisedConfig.debug_mode(epochs=1, batch_size=4, max_samples=20, precision="float32",
                                         class_weights=True, loss="focal")
    result = train(task, config, fold_of=fold_of % 2, augment=AugmentConfig.off())[0]
    from birdassets.supervised.fold_data import select_training_rows

    rows = select_training_rows(len(fold_of), 20, config.seed)
    windows = dataset.windows()
    np.testing.assert_array_equal(result.train_window_ids,
                                  windows.loc[windows["split"] == "train", "window_id"].to_numpy()[rows])
    assert result.valid_scores.shape[0] == 20 and result.test_scores.shape[0] == 2
    assert np.isfinite(result.valid_scores).all() and result.compiles == (0, 0) and result.session_compiles == 2


def test_class_weights_on_the_labels_equal_the_weighted_loss():
    from birdassets.supervised.losses import make_loss
    from birdassets.supervised.cross_validation import PackedClassWeightLoss

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (8, 5)).astype(np.float32)
    logits = rng.normal(0, 3, (8, 5)).astype(np.float32)
    weights = np.array([0.5, 1.0, 2.0, 1.5, 0.25], np.float32)
    for loss in ("bce", "focal"):
        config = SupervisedConfig(loss=loss)
        packed = np.concatenate([labels, np.broadcast_to(weights, labels.shape)], axis=1)
        got = float(PackedClassWeightLoss(make_loss(config, None))(packed, logits))
        assert got == pytest.approx(float(make_loss(config, weights)(labels, logits)), rel=1e-6)


def test_a_diverging_run_stops_with_an_error_naming_task_fold_and_epoch(task):
    from birdassets.supervised.fold_data import fold_datasets
    from birdassets.supervised.cross_validation import EpochValidation, FoldPlan, NonFiniteLossError

    dataset, fold_of, _ = task
    plan = FoldPlan.make(dataset, fold_of, CONFIG)
    data = fold_datasets(dataset, plan.rows, fold_of, 3, BATCH, AugmentConfig.off(), 42, 2, with_test=False)
    monitor = EpochValidation(plan, data, log=print)
    with pytest.raises(NonFiniteLossError, match=f"{TASK}: fold 3 epoch 2: the training loss is nan"):
        monitor.on_epoch_end(1, {"loss": float("nan")})


# ------------------------------------------------------------------------------------- model folder


def test_the_model_folder_round_trips(trained, tmp_path):
    from birdassets.supervised import model_folder

    result, _ = trained
    directory = model_folder.write_model_folder(tmp_path / "models" / TASK / "rnn", result,
                                                {"key": "birdclef-rnn.mini", "seed": np.int64(42)})
    record = model_folder.read_model_record(directory)
    assert record["key"] == "birdclef-rnn.mini" and record["seed"] == 42 and record["n_folds"] == 5
    assert record["classes"] == list(result.classes) and record["precision"] == "float32"
    saved = model_folder.read_predictions(directory)
    for name in ("fold_of", "y_train", "valid_scores", "y_test", "test_scores", "train_window_ids"):
        np.testing.assert_array_equal(saved[name], getattr(result, name))
    pd.testing.assert_frame_equal(model_folder.read_history(directory), result.history)
    assert [p.name for p in model_folder.fold_model_paths(directory)] == [f"fold_{k}.keras" for k in range(5)]
    loaded = model_folder.load_fold_models(directory)
    for copy, model in zip(loaded, result.models, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), model.get_weights(), strict=True))
    batch = np.random.default_rng(1).random((3, *result.input_shape), dtype=np.float32)
    np.testing.assert_array_equal(loaded[2].predict(batch, verbose=0), result.models[2].predict(batch, verbose=0))
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    (directory / "fold_3.keras").unlink()
    with pytest.raises(FileNotFoundError, match=r"rnn: incomplete supervised model folder, missing fold_3.keras"):
        model_folder.load_fold_models(directory)
    with pytest.raises(FileNotFoundError, match="no supervised model folder"):
        model_folder.read_predictions(tmp_path / "nowhere")
