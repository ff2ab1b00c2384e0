"""The supervised losses on logits (BCE, sigmoid focal, class weights) against numpy written out by hand, and
the class weights from label counts against values worked out by hand."""

from __future__ import annotations

import birdassets  # noqa: F401  (sets KERAS_BACKEND=jax before keras is imported)
import jax
import keras
import numpy as np
import pytest

from birdassets.supervised.config import SupervisedConfig
from birdassets.supervised.losses import MultiLabelLoss, class_weights_from_counts, make_loss

LOGITS = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], dtype=np.float32)
TARGETS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=np.float32)


def numpy_bce(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """-t log p - (1 - t) log(1 - p), float64, elementwise."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def numpy_focal(targets: np.ndarray, logits: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    """-alpha_t (1 - p_t)^gamma log(p_t) for 0/1 targets, float64, elementwise."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    p_t = np.where(targets == 1, p, 1 - p)
    alpha_t = np.where(targets == 1, alpha, 1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


def loss_value(loss: keras.losses.Loss, targets=TARGETS, logits=LOGITS) -> float:
    return float(keras.ops.convert_to_numpy(loss(targets, logits)))


def test_bce_is_the_mean_over_classes_then_batch_of_the_hand_written_formula():
    loss = make_loss(SupervisedConfig(), None)
    # Row 0: log(1+e^-2) + log(1+e^-1) + log(1+e^0.5); row 1: log(1+e^-3) + log 2 + log(1+e^-4)
    by_hand = (0.126928 + 0.313262 + 0.974077 + 0.048587 + 0.693147 + 0.018150) / 6
    assert loss_value(loss) == pytest.approx(by_hand, abs=1e-6)
    assert loss_value(loss) == pytest.approx(numpy_bce(TARGETS, LOGITS).mean(), rel=1e-6)
    keras_bce = keras.losses.BinaryCrossentropy(from_logits=True)
    assert loss_value(loss) == pytest.approx(loss_value(keras_bce), rel=1e-6)


def test_focal_loss_matches_its_formula_and_reduces_to_half_bce():
    focal = make_loss(SupervisedConfig(loss="focal", focal_gamma=2.0, focal_alpha=0.25), None)
    assert loss_value(focal) == pytest.approx(numpy_focal(TARGETS, LOGITS, 2.0, 0.25).mean(), rel=1e-5)
    assert loss_value(focal) < 0.25 * numpy_bce(TARGETS, LOGITS).mean()  # easy examples are down-weighted
    half = make_loss(SupervisedConfig(loss="focal", focal_gamma=0.0, focal_alpha=0.5), None)
    assert loss_value(half) == pytest.approx(0.5 * numpy_bce(TARGETS, LOGITS).mean(), rel=1e-6)


def test_class_weights_multiply_each_class_column_before_the_mean():
    weights = np.array([1.0, 2.0, 0.5])
    for kind, per_element in (("bce", numpy_bce(TARGETS, LOGITS)),
                              ("focal", numpy_focal(TARGETS, LOGITS, 2.0, 0.25))):
        loss = make_loss(SupervisedConfig(loss=kind), weights)
        assert loss_value(loss) == pytest.approx((per_element * weights).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="3 class weights for 2 classes"):
        loss_value(make_loss(SupervisedConfig(), weights), TARGETS[:, :2], LOGITS[:, :2])


def test_saturated_logits_give_finite_losses_and_gradients():
    logits = np.array([[100.0, -100.0, 120.0, -120.0]], dtype=np.float32)
    targets = np.array([[1.0, 1.0, 0.0, 0.5]], dtype=np.float32)  # right, wrong, wrong, soft (mixup)
    for kind, gamma in (("bce", 2.0), ("focal", 2.0), ("focal", 0.5), ("focal", 0.0)):
        loss = make_loss(SupervisedConfig(loss=kind, focal_gamma=gamma), None)
        value = loss_value(loss, targets, logits)
        gradient = jax.grad(lambda z, loss=loss: loss(targets, z))(logits)
        assert np.isfinite(value) and np.all(np.isfinite(np.asarray(gradient))), (kind, gamma)
    bce = loss_value(make_loss(SupervisedConfig(), None), targets, logits)
    assert bce == pytest.approx((0 + 100 + 120 + 60) / 4, rel=1e-6)  # soft target 0.5 at -120: 0.5 * 120


def test_the_loss_computes_in_float32_under_mixed_bfloat16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        loss = make_loss(SupervisedConfig(), None)
        out = loss(TARGETS.astype("bfloat16"), keras.ops.cast(LOGITS, "bfloat16"))
    finally:
        keras.config.set_dtype_policy(previous)
    assert str(out.dtype) == "float32"
    # These logits are exact in bfloat16, so a float32 computation gives the float32 value to float32 precision;
    # computing in bfloat16 (8 bits of mantissa) would be off by ~1e-3.
    assert float(out) == pytest.approx(numpy_bce(TARGETS, LOGITS).mean(), rel=1e-6)


def test_losses_serialize_and_reload_with_the_same_value():
    loss = make_loss(SupervisedConfig(loss="focal", focal_gamma=1.5, focal_alpha=0.4), np.array([1.0, 2.0, 0.5]))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(revived, MultiLabelLoss)
    assert revived.get_config() == loss.get_config()
    assert revived.get_config()["class_weights"] == [1.0, 2.0, 0.5]
    assert loss_value(revived) == loss_value(loss)
    with pytest.raises(ValueError, match="positive finite"):
        make_loss(SupervisedConfig(), np.array([1.0, 0.0]))


def test_class_weights_from_counts_by_hand():
    labels = np.array([
        [1, 0, 1, 0],
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ])
    # n = 6 windows, C = 4, counts (3, 1, 2, 0): n/(C n_c) = 0.5, 1.5, 0.75; their mean 11/12 -> 6/11, 18/11, 9/11;
    # class 3 has no positive -> 1.0
    np.testing.assert_allclose(class_weights_from_counts(labels), [6 / 11, 18 / 11, 9 / 11, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(class_weights_from_counts(np.zeros((3, 2))), [1.0, 1.0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        class_weights_from_counts(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        class_weights_from_counts(np.ones(4))


def test_a_tiny_model_trains_with_the_loss_and_evaluate_reports_it():
    rng = np.random.default_rng(0)
    targets = (rng.random((64, 3)) < 0.4).astype(np.float32)
    x = (rng.normal(size=(64, 5)) + targets @ np.ones((3, 5))).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=make_loss(SupervisedConfig(), np.array([1.0, 2.0, 1.0])))
    history = model.fit(x, targets, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    evaluated = model.evaluate(x, targets, batch_size=64, verbose=0)
    by_hand = (numpy_bce(targets, model.predict(x, verbose=0)) * [1.0, 2.0, 1.0]).mean()
    assert evaluated == pytest.approx(by_hand, rel=1e-5)
