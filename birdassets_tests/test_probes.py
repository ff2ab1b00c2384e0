"""Tests for birdassets.probes: learning, out-of-fold bookkeeping, fold batching, seeds, ASL."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from birdassets.probes import (
    DEFAULT_PROBES,
    PROBES,
    ProbeConfig,
    ProbeResult,
    asymmetric_loss,
    bce_loss,
    fit_probe,
    predict_probe,
)

N_WINDOWS, DIM, N_CLASSES, N_FOLDS = 400, 32, 10, 5


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian cluster per class in 32-d; half the windows mix two classes' centres.

    Returns x [400, 32] (offset by +3 so that standardisation matters), y [400, 10] multi-hot,
    fold_of [400] in 0..4. Label prevalence ~0.15, so chance macro AP is ~0.15.
    """
    rng = np.random.default_rng(seed)
    centres = 1.5 * rng.normal(size=(N_CLASSES, DIM))
    first = rng.integers(N_CLASSES, size=N_WINDOWS)
    second = rng.integers(N_CLASSES, size=N_WINDOWS)
    mixed = rng.random(N_WINDOWS) < 0.5
    rows = np.arange(N_WINDOWS)
    y = np.zeros((N_WINDOWS, N_CLASSES), dtype=np.float32)
    y[rows, first] = 1
    y[rows[mixed], second[mixed]] = 1
    mean = np.where(mixed[:, None], (centres[first] + centres[second]) / 2, centres[first])
    x = mean + rng.normal(size=(N_WINDOWS, DIM)) + 3.0
    fold_of = rng.integers(N_FOLDS, size=N_WINDOWS)
    return x.astype(np.float32), y, fold_of


@pytest.fixture(scope="module")
def clusters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _clusters()


@pytest.fixture(scope="module")
def x_test(clusters) -> np.ndarray:
    return clusters[0][:8] + 0.5


# Linear probe with minibatches of 64 windows (exercises the per-step sampling path).
MINIBATCH_LINEAR = dataclasses.replace(PROBES["linear"], name="linear-mb", batch_size=64)


@pytest.fixture(scope="module")
def fitted(clusters, x_test) -> Callable[[ProbeConfig], ProbeResult]:
    """fit_probe results on the cluster problem, computed once per config name (lazily)."""
    x, y, fold_of = clusters
    cache: dict = {}

    def fit(config: ProbeConfig):
        if config.name not in cache:
            cache[config.name] = fit_probe(config, x, y, fold_of, x_test=x_test)
        return cache[config.name]

    return fit


def _macro_ap(y: np.ndarray, scores: np.ndarray) -> float:
    return float(average_precision_score(y, scores, average="macro"))


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name", ["linear", "mlp", "centroid", "linear-asl"])
def test_probe_learns_clusters_but_not_shuffled_labels(clusters, fitted, name):
    x, y, fold_of = clusters
    chance = float(y.mean())
    result = fitted(PROBES[name])

    assert result.valid_scores.shape == (N_WINDOWS, N_CLASSES)
    assert result.test_scores.shape == (N_FOLDS, 8, N_CLASSES)
    assert np.isfinite(result.valid_scores).all()
    assert (result.valid_scores >= 0).all() and (result.valid_scores <= 1).all()
    assert _macro_ap(y, result.valid_scores) > 0.9 > 4 * chance

    shuffled = y[np.random.default_rng(1).permutation(N_WINDOWS)]
    control = fit_probe(PROBES[name], x, shuffled, fold_of)  # no test windows
    assert control.test_scores.shape == (N_FOLDS, 0, N_CLASSES)
    assert _macro_ap(shuffled, control.valid_scores) < chance + 0.07

    if name != "centroid":
        assert result.train_loss.shape == (N_FOLDS, PROBES[name].steps)
        # Training lowered the loss substantially in every fold.
        assert (result.train_loss[:, -1] < 0.5 * result.train_loss[:, 0]).all()


def test_registry_and_defaults():
    assert set(DEFAULT_PROBES) <= set(PROBES)
    assert DEFAULT_PROBES == ("linear", "mlp", "centroid")
    for name, config in PROBES.items():
        assert config.name == name
    assert PROBES["linear-asl"].loss == "asl" and PROBES["linear-asl"].kind == "linear"


# --------------------------------------------------------------------------- out-of-fold


def test_valid_scores_come_from_the_model_that_never_saw_the_row(clusters):
    """Random labels + an mlp that memorises: in-sample AP ~1, out-of-fold AP ~chance."""
    x, _, fold_of = clusters
    y = (np.random.default_rng(3).random((N_WINDOWS, N_CLASSES)) < 0.15).astype(np.float32)
    fold_of = fold_of.copy()
    fold_of[:10] = -1  # never validated: NaN rows, train in every fold
    result = fit_probe(PROBES["mlp"], x, y, fold_of, x_test=x)

    assert result.test_scores.shape == (N_FOLDS, N_WINDOWS, N_CLASSES)
    assert np.isnan(result.valid_scores[:10]).all()
    assert not np.isnan(result.valid_scores[10:]).any()
    for f in range(N_FOLDS):
        validated, trained = fold_of == f, fold_of != f
        # Row i's out-of-fold score is fold fold_of[i]'s model applied to row i ...
        np.testing.assert_allclose(
            result.valid_scores[validated], result.test_scores[f][validated], atol=1e-6
        )
        # ... and that model memorised its training rows (in-sample scores would be useless).
        assert _macro_ap(y[trained], result.test_scores[f][trained]) > 0.98

    scored = fold_of >= 0
    assert _macro_ap(y[scored], result.valid_scores[scored]) < y.mean() + 0.07
    # Scores taken from a model that did see the row would be near-perfect.
    leaked = np.stack([result.test_scores[(f + 1) % N_FOLDS][i] for i, f in enumerate(fold_of)])
    assert _macro_ap(y[scored], leaked[scored]) > 0.98


@pytest.mark.parametrize(
    ("config", "fold", "n_folds"),
    [
        # A genuinely single-fold program (vmap over 1) vs fold 0 of the 5-fold program.
        (MINIBATCH_LINEAR, 0, 1),
        # Fold 4 while folds 0-3 train on different windows (none validated) vs the 5-fold call:
        # no fold's result depends on what the other folds train on.
        (PROBES["mlp"], 4, 5),
    ],
)
def test_all_fold_training_equals_training_each_fold_alone(
    clusters, x_test, fitted, config, fold, n_folds
):
    x, y, fold_of = clusters
    together = fitted(config)
    # Only `fold` validates. Fold f's PRNG key depends only on (seed, f), so fold `fold` starts
    # from the same parameters in both calls.
    only = np.where(fold_of == fold, fold, -1)
    alone = fit_probe(config, x, y, only, x_test=x_test, n_folds=n_folds)
    rows = fold_of == fold
    np.testing.assert_allclose(alone.valid_scores[rows], together.valid_scores[rows], atol=1e-5)
    assert np.isnan(alone.valid_scores[~rows]).all()
    np.testing.assert_allclose(alone.test_scores[fold], together.test_scores[fold], atol=1e-5)
    np.testing.assert_allclose(alone.train_loss[fold], together.train_loss[fold], atol=1e-5)
    for key, value in together.params.items():
        np.testing.assert_allclose(alone.params[key][fold], value[fold], atol=1e-5)
    if n_folds > 1:  # the other folds did train on something else (all windows)
        assert not np.allclose(alone.params["out_kernel"][0], together.params["out_kernel"][0])


def test_standardisation_uses_training_windows_only(clusters, fitted):
    x, _, fold_of = clusters
    result = fitted(PROBES["linear"])
    for f in range(N_FOLDS):
        train = x[fold_of != f]
        np.testing.assert_allclose(result.params["input_mean"][f], train.mean(0), atol=1e-4)
        np.testing.assert_allclose(result.params["input_std"][f], train.std(0), rtol=1e-4)
    assert result.params["out_kernel"].shape == (N_FOLDS, DIM, N_CLASSES)
    assert result.params["ln_scale"].shape == (N_FOLDS, DIM)


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("config", [PROBES["mlp"], MINIBATCH_LINEAR])
def test_same_seed_identical_different_seed_different(clusters, x_test, fitted, config):
    x, y, fold_of = clusters
    first = fitted(config)
    again = fit_probe(config, x, y, fold_of, x_test=x_test)
    other = fit_probe(dataclasses.replace(config, seed=1), x, y, fold_of, x_test=x_test)
    np.testing.assert_array_equal(first.valid_scores, again.valid_scores)
    np.testing.assert_array_equal(first.test_scores, again.test_scores)
    np.testing.assert_array_equal(first.train_loss, again.train_loss)
    assert first.params.keys() == again.params.keys()
    for key in first.params:
        np.testing.assert_array_equal(first.params[key], again.params[key])
    assert not np.array_equal(first.params["out_kernel"], other.params["out_kernel"])
    assert not np.array_equal(first.valid_scores, other.valid_scores)
    # Folds start from different keys, too.
    assert not np.array_equal(first.params["out_kernel"][0], first.params["out_kernel"][1])


# --------------------------------------------------------------------------- centroid


def test_centroid_matches_numpy_and_scores_unseen_class_zero(clusters):
    x, y, fold_of = clusters
    y = y.copy()
    # Class 9 is positive only in rows validated in fold 2 -> fold 2's training set lacks it.
    y[:, 9] = 0
    y[np.flatnonzero(fold_of == 2)[:10], 9] = 1
    result = fit_probe(PROBES["centroid"], x, y, fold_of, x_test=x[:6])

    assert result.train_loss.shape == (N_FOLDS, 0)
    f = 2
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    train = fold_of != f
    sums = y[train].T @ unit[train]
    centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    expected = (1 + unit[fold_of == f] @ centroids.T) / 2
    expected[:, 9] = 0.0
    np.testing.assert_allclose(result.valid_scores[fold_of == f], expected, atol=1e-5)
    assert (result.valid_scores[fold_of == f, 9] == 0).all()
    assert (result.test_scores[f, :, 9] == 0).all()
    assert (result.test_scores[0, :, 9] > 0).all()  # fold 0 did see class 9's positives
    assert result.params["positive_weight"][f, 9] == 0
    assert result.params["positive_weight"][0, 9] == 10


# --------------------------------------------------------------------------- losses


def _asl_reference(logits, labels, gamma_neg, gamma_pos, clip, eps=1e-8):
    """Ridnik et al.'s AsymmetricLoss.forward, transcribed to float64 numpy (sum reduction)."""
    xs_pos = 1 / (1 + np.exp(-logits))
    xs_neg = 1 - xs_pos
    if clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1)
    loss = labels * np.log(np.maximum(xs_pos, eps)) + (1 - labels) * np.log(
        np.maximum(xs_neg, eps)
    )
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * labels + xs_neg * (1 - labels)
        gamma = gamma_pos * labels + gamma_neg * (1 - labels)
        loss = loss * (1 - pt) ** gamma
    return -loss.sum()


@pytest.mark.parametrize(
    ("gamma_neg", "gamma_pos", "clip"), [(4.0, 0.0, 0.05), (2.0, 1.0, 0.2), (0.0, 0.0, 0.0)]
)
def test_asymmetric_loss_matches_reference(gamma_neg, gamma_pos, clip):
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=3.0, size=(50, 8))
    labels = (rng.random((50, 8)) < 0.3).astype(np.float64)
    ours = asymmetric_loss(
        jnp.asarray(logits, jnp.float32),
        jnp.asarray(labels, jnp.float32),
        jnp.ones(50),
        gamma_neg,
        gamma_pos,
        clip,
    )
    # Reference sums; ours is the mean over samples x classes.
    expected = _asl_reference(logits, labels, gamma_neg, gamma_pos, clip) / labels.size
    np.testing.assert_allclose(float(ours), expected, rtol=1e-5)

    # Per-sample weights: weighted mean of per-row reference losses.
    weights = rng.random(50)
    weighted = asymmetric_loss(
        jnp.asarray(logits, jnp.float32),
        jnp.asarray(labels, jnp.float32),
        jnp.asarray(weights, jnp.float32),
        gamma_neg,
        gamma_pos,
        clip,
    )
    rows = np.array(
        [_asl_reference(logits[i], labels[i], gamma_neg, gamma_pos, clip) for i in range(50)]
    )
    np.testing.assert_allclose(float(weighted), (weights @ rows) / (weights.sum() * 8), rtol=1e-5)


def test_asymmetric_loss_without_focusing_or_clip_is_bce():
    rng = np.random.default_rng(8)
    logits = jnp.asarray(rng.normal(scale=4.0, size=(40, 5)), jnp.float32)
    labels = jnp.asarray(rng.random((40, 5)) < 0.4, jnp.float32)
    weights = jnp.asarray(rng.random(40), jnp.float32)
    asl = asymmetric_loss(logits, labels, weights, gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    bce = bce_loss(logits, labels, weights)
    np.testing.assert_allclose(float(asl), float(bce), rtol=1e-6)

    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    lab, w = np.asarray(labels, np.float64), np.asarray(weights, np.float64)
    per_cell = -(lab * np.log(p) + (1 - lab) * np.log(1 - p))
    np.testing.assert_allclose(float(bce), (w @ per_cell).sum() / (w.sum() * 5), rtol=1e-5)

    # The default ASL down-weights easy negatives, so it differs from BCE.
    assert abs(float(asymmetric_loss(logits, labels, weights)) - float(bce)) > 1e-2


def test_losses_have_finite_gradients_at_saturated_logits():
    logits = jnp.array([[40.0, -40.0, 0.0], [-100.0, 100.0, 3.0]])
    labels = jnp.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    weights = jnp.ones(2)
    for loss in (
        lambda z: bce_loss(z, labels, weights),
        lambda z: asymmetric_loss(z, labels, weights),
        lambda z: asymmetric_loss(z, labels, weights, gamma_neg=2.0, gamma_pos=1.0, clip=0.0),
    ):
        value, grad = jax.jit(jax.value_and_grad(loss))(logits)
        assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors(clusters):
    x, y, fold_of = clusters
    config = PROBES["centroid"]
    with pytest.raises(ValueError, match="number of windows"):
        fit_probe(config, x, y[:-1], fold_of)
    with pytest.raises(ValueError, match="fold_of must be 1-D with one entry per window"):
        fit_probe(config, x, y, fold_of[:-1])
    with pytest.raises(ValueError, match=r"fold\(s\) \[0\] have no training windows"):
        fit_probe(config, x, y, np.zeros(N_WINDOWS, dtype=int))
    nan_x = x.copy()
    nan_x[5, 3] = np.nan
    with pytest.raises(ValueError, match=r"x \[n, dim\] contains 1 NaN.*row 5, column 3"):
        fit_probe(config, nan_x, y, fold_of)
    with pytest.raises(ValueError, match="x_test has dim 31"):
        fit_probe(config, x, y, fold_of, x_test=x[:3, :31])
    with pytest.raises(ValueError, match="n_folds=2"):
        fit_probe(config, x, y, fold_of, n_folds=2)
    with pytest.raises(ValueError, match="all -1"):
        fit_probe(config, x, y, np.full(N_WINDOWS, -1))
    with pytest.raises(ValueError, match="integers"):
        fit_probe(config, x, y, fold_of.astype(float))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        fit_probe(config, x, 2 * y, fold_of)
    with pytest.raises(ValueError, match="2-D"):
        fit_probe(config, x[:, 0], y, fold_of)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="kind must be one of"):
        ProbeConfig("p", "svm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss must be one of"):
        ProbeConfig("p", "linear", loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ProbeConfig("p", "mlp", steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        ProbeConfig("p", "linear", batch_size=0)
    with pytest.raises(ValueError, match="asl_clip"):
        ProbeConfig("p", "linear", loss="asl", asl_clip=1.5)


def test_no_test_windows(clusters):
    x, y, fold_of = clusters
    result = fit_probe(PROBES["centroid"], x, y, fold_of)
    assert result.test_scores.shape == (N_FOLDS, 0, N_CLASSES)
    empty = fit_probe(PROBES["centroid"], x, y, fold_of, x_test=np.zeros((0, DIM)))
    assert empty.test_scores.shape == (N_FOLDS, 0, N_CLASSES)


@pytest.mark.parametrize("name", ["linear", "mlp", "centroid"])
def test_saved_params_reproduce_the_test_scores(fitted, x_test, name):
    """predict_probe on the returned params gives each fold's test probabilities (detection reuses probes)."""
    result = fitted(PROBES[name])
    predicted = predict_probe(result.params, x_test)
    assert predicted.shape == result.test_scores.shape == (N_FOLDS, len(x_test), N_CLASSES)
    np.testing.assert_allclose(predicted, result.test_scores, rtol=1e-5, atol=1e-6)
