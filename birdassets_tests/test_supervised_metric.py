"""The streaming Keras ``ClassWiseAUC`` equals the core ``class_wise_auc`` (to 1e-9) over batches, in Keras's
compiled evaluate/fit steps, with an all-negative class, an all-positive class and ties; reset, overflow, config."""

from __future__ import annotations

import birdassets  # noqa: F401  (sets KERAS_BACKEND=jax before keras is imported)
import jax
import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from birdassets.metrics import class_wise_auc
from birdassets.supervised.auc_metric import ClassWiseAUC

TOL = 1e-9
N_CLASSES = 6
UNEVEN_BATCHES = (1, 37, 64, 5, 100, 93)  # 300 rows


def labelled_scores(rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 truth and scores ``[rows, 6]``: class 4 all negative, class 5 all positive, scores rounded to
    one decimal (many ties), class 0 informative (positives score higher)."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((rows, N_CLASSES)) < 0.3).astype(np.float32)
    truth[:, 4] = 0
    truth[:, 5] = 1
    scores = rng.random((rows, N_CLASSES)) + 0.5 * truth * (np.arange(N_CLASSES) == 0)
    return truth, np.round(scores, 1).astype(np.float32)


def streamed(metric: ClassWiseAUC, truth: np.ndarray, scores: np.ndarray, sizes) -> float:
    start = 0
    for size in sizes:
        metric.update_state(truth[start:start + size], scores[start:start + size])
        start += size
    assert start == len(truth)
    return metric.result()


def sklearn_macro_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """Independent reference: sklearn AUC averaged over classes with both a positive and a negative."""
    defined = [c for c in range(truth.shape[1]) if 0 < truth[:, c].sum() < len(truth)]
    return float(np.mean([roc_auc_score(truth[:, c], scores[:, c]) for c in defined]))


def test_streamed_uneven_batches_equal_the_core_metric_with_ties_and_one_sided_classes():
    truth, scores = labelled_scores()
    core = class_wise_auc(truth, scores)
    assert core.n_classes_scored == 4  # the all-negative and the all-positive class are left out
    assert len(np.unique(scores[:, 0])) < 20  # ties everywhere
    value = streamed(ClassWiseAUC(N_CLASSES, capacity=512), truth, scores, UNEVEN_BATCHES)
    assert abs(value - core.value) <= TOL
    assert abs(value - sklearn_macro_auc(truth, scores)) <= TOL
    assert value > 0.55  # class 0 is informative: a buffer written at the wrong rows would not say so


def test_one_batch_and_seven_batches_give_the_identical_value():
    truth, scores = labelled_scores(rows=350, seed=1)
    whole = streamed(ClassWiseAUC(N_CLASSES, capacity=350), truth, scores, (350,))
    seven = streamed(ClassWiseAUC(N_CLASSES, capacity=350), truth, scores, (50,) * 7)
    assert whole == seven
    assert abs(whole - class_wise_auc(truth, scores).value) <= TOL


def test_reset_state_forgets_every_row():
    first, first_scores = labelled_scores(seed=2)
    second, second_scores = labelled_scores(rows=120, seed=3)
    metric = ClassWiseAUC(N_CLASSES, capacity=300)
    streamed(metric, first, first_scores, (300,))
    metric.reset_state()
    assert int(metric.rows_seen.value) == 0
    assert float(np.abs(keras.ops.convert_to_numpy(metric.scores.value)).sum()) == 0.0
    assert np.isnan(metric.result())  # no rows: nothing to score, as the core function says
    value = streamed(metric, second, second_scores, (60, 60))
    assert abs(value - class_wise_auc(second, second_scores).value) <= TOL


def test_more_rows_than_the_capacity_raise_instead_of_a_wrong_number():
    truth, scores = labelled_scores(rows=60)
    metric = ClassWiseAUC(N_CLASSES, capacity=50)
    metric.update_state(truth[:40], scores[:40])
    assert abs(metric.result() - class_wise_auc(truth[:40], scores[:40]).value) <= TOL
    metric.update_state(truth[40:], scores[40:])
    with pytest.raises(ValueError, match="60 rows were seen but its capacity is 50 rows"):
        metric.result()
    too_big = ClassWiseAUC(N_CLASSES, capacity=10)
    too_big.update_state(truth[:11], scores[:11])  # one batch larger than the whole buffer
    with pytest.raises(ValueError, match="capacity is 10 rows"):
        too_big.result()


def test_logits_are_ranked_exactly_where_a_float32_sigmoid_would_tie_them():
    rng = np.random.default_rng(4)
    truth = (rng.random((200, 3)) < 0.5).astype(np.float32)
    logits = (rng.normal(size=(200, 3)) * 10 + 25 * truth).astype(np.float32)  # many logits above 17
    value = streamed(ClassWiseAUC(3, capacity=200, from_logits=True), truth, logits, (128, 72))
    exact_probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    float32_probabilities = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    assert abs(value - class_wise_auc(truth, exact_probabilities).value) <= TOL
    assert abs(value - class_wise_auc(truth, float32_probabilities).value) > 1e-4  # saturation ties cost AUC


def tiny_model(n_inputs: int, capacity: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((n_inputs,)), keras.layers.Dense(N_CLASSES)])  # float32 logits
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[ClassWiseAUC(N_CLASSES, capacity=capacity, from_logits=True)])
    return model


def inputs_for(truth: np.ndarray, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(len(truth), 8)) + truth[:, :1]).astype(np.float32)


def test_inside_model_evaluate_it_equals_the_core_metric_on_model_predict():
    truth, _ = labelled_scores(rows=300, seed=6)
    x = inputs_for(truth)
    model = tiny_model(8, capacity=300)
    logs = model.evaluate(x, truth, batch_size=64, return_dict=True, verbose=0)  # 4 batches of 64 + one of 44
    predicted = model.predict(x, batch_size=64, verbose=0)
    assert predicted.dtype == np.float32
    core = class_wise_auc(truth, predicted)
    assert core.n_classes_scored == 4
    assert abs(logs["class_wise_auc"] - core.value) <= TOL


def test_fit_history_holds_the_exact_validation_auc_of_the_last_epoch():
    truth, _ = labelled_scores(rows=300, seed=7)
    x = inputs_for(truth, seed=8)
    model = tiny_model(8, capacity=300)
    history = model.fit(x[:200], truth[:200], validation_data=(x[200:], truth[200:]), batch_size=48,
                        epochs=3, verbose=0, shuffle=False)
    final_valid = class_wise_auc(truth[200:], model.predict(x[200:], verbose=0)).value
    assert abs(history.history["val_class_wise_auc"][-1] - final_valid) <= TOL
    assert history.history["val_class_wise_auc"][0] != history.history["val_class_wise_auc"][-1]  # it trained
    assert all(np.isfinite(history.history["class_wise_auc"]))  # the training-rows AUC, exact at epoch end


def test_inside_a_traced_step_result_is_nan_and_never_a_partial_value():
    truth, scores = labelled_scores(rows=40)
    metric = ClassWiseAUC(N_CLASSES, capacity=40)
    state = metric.stateless_update_state([v.value for v in metric.variables], truth, scores)
    assert np.isnan(float(jax.jit(metric.stateless_result)(state)))
    assert abs(metric.stateless_result(state) - class_wise_auc(truth, scores).value) <= TOL  # eager: exact


def test_bad_arguments_and_batches_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        ClassWiseAUC(3, capacity=0)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        ClassWiseAUC(2.5, capacity=10)
    metric = ClassWiseAUC(3, capacity=10)
    with pytest.raises(ValueError, match=r"shape \[batch, 3\]"):
        metric.update_state(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no sample_weight"):
        metric.update_state(np.zeros((2, 3)), np.zeros((2, 3)), sample_weight=np.ones(2))


def test_config_round_trips_and_a_saved_model_reloads_without_custom_objects(tmp_path):
    metric = ClassWiseAUC(N_CLASSES, capacity=77, from_logits=True, name="valid_auc")
    config = metric.get_config()
    assert config["num_classes"] == N_CLASSES and config["capacity"] == 77 and config["from_logits"] is True
    assert ClassWiseAUC.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(revived, ClassWiseAUC) and revived.get_config() == config

    truth, _ = labelled_scores(rows=100, seed=9)
    x = inputs_for(truth, seed=10)
    model = tiny_model(8, capacity=100)
    expected = model.evaluate(x, truth, batch_size=32, return_dict=True, verbose=0)["class_wise_auc"]
    model.save(tmp_path / "tiny.keras")
    reloaded = keras.saving.load_model(tmp_path / "tiny.keras")
    assert reloaded.evaluate(x, truth, batch_size=32, return_dict=True, verbose=0)["class_wise_auc"] == expected
