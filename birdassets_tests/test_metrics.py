"""Metrics checked against scikit-learn (to 1e-9) and against plain reference code."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from birdassets import metrics
from birdassets.metrics import (
    METRICS,
    MetricValue,
    average_precision_per_class,
    chance_cmap,
    class_wise_auc,
    cmap,
    compute_all,
    padded_cmap,
    per_class_scores,
    roc_auc_per_class,
    top1_accuracy,
)

TOL = 1e-9


# --------------------------------------------------------------------------- references


def sklearn_ap(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """sklearn AP per column; NaN where the column has no positives."""
    out = np.full(y_true.shape[1], np.nan)
    for c in range(y_true.shape[1]):
        if y_true[:, c].any():
            out[c] = average_precision_score(y_true[:, c], y_score[:, c])
    return out


def sklearn_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """sklearn ROC-AUC per column; NaN where the column has only one class."""
    out = np.full(y_true.shape[1], np.nan)
    for c in range(y_true.shape[1]):
        if 0 < y_true[:, c].sum() < y_true.shape[0]:
            out[c] = roc_auc_score(y_true[:, c], y_score[:, c])
    return out


def reference_top1(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, int]:
    hits, rows = 0, 0
    for truth_row, score_row in zip(y_true, y_score):
        if truth_row.sum() == 0:
            continue
        rows += 1
        best = max(range(len(score_row)), key=lambda c: (score_row[c], -c))
        hits += int(truth_row[best] == 1)
    return (hits / rows if rows else float("nan")), rows


def random_problem(rng: np.random.Generator, rows: int, classes: int, prevalence: float = 0.2):
    y_true = (rng.random((rows, classes)) < prevalence).astype(np.int64)
    y_score = rng.normal(size=(rows, classes)) + 1.5 * y_true  # informative but imperfect
    return y_true, y_score


def assert_per_class_matches_sklearn(y_true: np.ndarray, y_score: np.ndarray) -> None:
    ap = average_precision_per_class(y_true, y_score)
    auc = roc_auc_per_class(y_true, y_score)
    np.testing.assert_allclose(ap, sklearn_ap(y_true, y_score), rtol=0, atol=TOL)
    np.testing.assert_allclose(auc, sklearn_auc(y_true, y_score), rtol=0, atol=TOL)
    assert ap.dtype == np.float64 and ap.shape == (y_true.shape[1],)
    assert auc.dtype == np.float64 and auc.shape == (y_true.shape[1],)


# --------------------------------------------------------------------------- per class vs sklearn


@pytest.mark.parametrize("shape", [(50, 3), (200, 17), (1000, 40), (7, 2), (2, 5)])
def test_random_continuous_scores_match_sklearn(shape):
    rng = np.random.default_rng(sum(shape))
    y_true, y_score = random_problem(rng, *shape, prevalence=0.3)
    assert_per_class_matches_sklearn(y_true, y_score)


def test_heavily_tied_scores_match_sklearn():
    rng = np.random.default_rng(1)
    y_true, y_score = random_problem(rng, 300, 12, prevalence=0.25)
    probabilities = 1.0 / (1.0 + np.exp(-y_score))
    rounded = np.round(probabilities, 1)  # ~10 distinct values per column: big tie groups
    assert len(np.unique(rounded[:, 0])) <= 11 < len(rounded)
    assert_per_class_matches_sklearn(y_true, rounded)
    # Ties must be grouped: a tie-blind (position-wise) AP differs on these data.
    order = np.argsort(-rounded[:, 0], kind="stable")
    hits = y_true[order, 0]
    tie_blind = (np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits == 1].mean()
    assert abs(tie_blind - average_precision_per_class(y_true, rounded)[0]) > 1e-6


def test_all_equal_columns_match_sklearn():
    rng = np.random.default_rng(2)
    y_true = (rng.random((40, 4)) < 0.3).astype(int)
    y_score = np.tile(np.array([0.5, 0.0, -3.0, 1.0]), (40, 1))
    assert_per_class_matches_sklearn(y_true, y_score)
    # One tie group: AP = prevalence, AUC = 0.5.
    np.testing.assert_allclose(
        average_precision_per_class(y_true, y_score), y_true.mean(axis=0), atol=TOL
    )
    np.testing.assert_allclose(roc_auc_per_class(y_true, y_score), 0.5, atol=TOL)


def test_integer_valued_scores_match_sklearn():
    rng = np.random.default_rng(3)
    y_true = (rng.random((120, 6)) < 0.3).astype(np.int8)
    y_score = rng.integers(-3, 4, size=(120, 6))  # int dtype, many ties
    assert_per_class_matches_sklearn(y_true, y_score)


def test_bool_truth_and_float32_scores_accepted():
    rng = np.random.default_rng(4)
    y_true, y_score = random_problem(rng, 80, 5)
    expected = sklearn_ap(y_true, y_score.astype(np.float32))
    got = average_precision_per_class(y_true.astype(bool), y_score.astype(np.float32))
    np.testing.assert_allclose(got, expected, atol=TOL)


def test_classes_without_positives_or_negatives_are_nan():
    rng = np.random.default_rng(5)
    y_true, y_score = random_problem(rng, 60, 6, prevalence=0.3)
    y_true[:, 1] = 0  # no positives
    y_true[:, 4] = 1  # all positives
    ap = average_precision_per_class(y_true, y_score)
    auc = roc_auc_per_class(y_true, y_score)
    assert np.isnan(ap[1]) and not np.isnan(ap).any(where=np.arange(6) != 1)
    assert ap[4] == pytest.approx(1.0)  # every row positive: precision 1 everywhere
    assert np.isnan(auc[1]) and np.isnan(auc[4])
    assert np.isfinite(auc[[0, 2, 3, 5]]).all()
    assert_per_class_matches_sklearn(y_true, y_score)


def test_rows_without_labels_still_count_as_negatives():
    rng = np.random.default_rng(6)
    y_true, y_score = random_problem(rng, 100, 5, prevalence=0.3)
    y_true[::3] = 0  # a third of the rows are "no-call"
    assert_per_class_matches_sklearn(y_true, y_score)


def test_single_row():
    y_true = np.array([[1, 0, 1]])
    y_score = np.array([[0.2, 0.9, -1.0]])
    assert_per_class_matches_sklearn(y_true, y_score)
    np.testing.assert_array_equal(average_precision_per_class(y_true, y_score), [1.0, np.nan, 1.0])
    assert np.isnan(roc_auc_per_class(y_true, y_score)).all()
    assert cmap(y_true, y_score) == MetricValue(1.0, 2)
    assert math.isnan(class_wise_auc(y_true, y_score).value)
    assert class_wise_auc(y_true, y_score).n_classes_scored == 0
    assert top1_accuracy(y_true, y_score) == MetricValue(0.0, 1)  # argmax is class 1, a negative


def test_perfect_and_inverted_rankings():
    y_true = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    perfect = y_true + 0.0
    np.testing.assert_allclose(average_precision_per_class(y_true, perfect), 1.0)
    np.testing.assert_allclose(roc_auc_per_class(y_true, perfect), 1.0)
    np.testing.assert_allclose(roc_auc_per_class(y_true, -perfect), 0.0)
    # Inverted, distinct scores: positives at ranks 3, 4 of 4 -> AP = (1/3 + 2/4) / 2.
    inverted = -perfect - 0.1 * np.arange(4)[:, None]
    np.testing.assert_allclose(average_precision_per_class(y_true, inverted), 5 / 12)
    # Inverted with both positives tied last: one threshold, precision 2/4 for both.
    np.testing.assert_allclose(average_precision_per_class(y_true, -perfect), 0.5)


def test_blocked_computation_equals_unblocked(monkeypatch):
    rng = np.random.default_rng(7)
    y_true, y_score = random_problem(rng, 64, 23)
    y_score = np.round(y_score, 1)
    whole_ap = average_precision_per_class(y_true, y_score)
    whole_auc = roc_auc_per_class(y_true, y_score)
    monkeypatch.setattr(metrics, "_MAX_BLOCK_CELLS", 64 * 5)  # blocks of 5 columns, last has 3
    np.testing.assert_array_equal(average_precision_per_class(y_true, y_score), whole_ap)
    np.testing.assert_array_equal(roc_auc_per_class(y_true, y_score), whole_auc)
    np.testing.assert_allclose(whole_ap, sklearn_ap(y_true, y_score), atol=TOL)


# --------------------------------------------------------------------------- benchmark metrics


def test_cmap_drops_classes_without_positives_and_counts_them():
    rng = np.random.default_rng(8)
    y_true, y_score = random_problem(rng, 150, 10, prevalence=0.2)
    y_true[:, [2, 7]] = 0
    result = cmap(y_true, y_score)
    scored = [c for c in range(10) if c not in (2, 7)]
    expected = np.mean([average_precision_score(y_true[:, c], y_score[:, c]) for c in scored])
    assert result.n_classes_scored == 8
    assert result.value == pytest.approx(expected, abs=TOL)
    # torchmetrics >= 1.4 / plain sklearn macro would average in AP = 0: a different number.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sklearn_macro = average_precision_score(y_true, y_score, average="macro")
    assert sklearn_macro == pytest.approx(expected * 8 / 10, abs=TOL)


def test_class_wise_auc_matches_kaggle_reference():
    rng = np.random.default_rng(9)
    y_true, y_score = random_problem(rng, 200, 9, prevalence=0.25)
    y_true[:, 0] = 0  # skipped: no positives (Kaggle filter)
    y_true[:, 5] = 1  # skipped: no negatives (AUC undefined)
    y_true[10:20, [c for c in range(9) if c != 5]] = 0  # no-call-ish rows stay in as negatives
    # Kaggle "birdclef-roc-auc": keep columns with positives, sklearn macro ROC-AUC.
    kaggle_columns = [c for c in range(9) if y_true[:, c].sum() > 0 and c != 5]
    expected = roc_auc_score(
        y_true[:, kaggle_columns], y_score[:, kaggle_columns], average="macro"
    )
    result = class_wise_auc(y_true, y_score)
    assert result.n_classes_scored == 7
    assert result.value == pytest.approx(expected, abs=TOL)


def test_padded_cmap_matches_sklearn_on_manually_padded_arrays():
    rng = np.random.default_rng(10)
    y_true, y_score = random_problem(rng, 120, 8, prevalence=0.15)
    y_true[:, 3] = 0  # an empty class still counts (and is inflated by the padding)
    probabilities = 1.0 / (1.0 + np.exp(-y_score))
    for k in (5, 1, 3):
        padded_true = np.vstack([y_true, np.ones((k, 8), dtype=int)])
        padded_score = np.vstack([probabilities, np.ones((k, 8))])
        expected = average_precision_score(padded_true, padded_score, average="macro")
        result = padded_cmap(y_true, probabilities, padding_rows=k)
        assert result.n_classes_scored == 8
        assert result.value == pytest.approx(expected, abs=TOL)
    assert padded_cmap(y_true, probabilities).value == pytest.approx(
        padded_cmap(y_true, probabilities, padding_rows=5).value, abs=0
    )
    # Empty class 3 alone: 5 padded positives on top, 120 negatives below -> AP 1.
    assert average_precision_per_class(
        np.vstack([y_true, np.ones((5, 8), dtype=int)]),
        np.vstack([probabilities, np.ones((5, 8))]),
    )[3] == pytest.approx(1.0)


def test_padded_cmap_without_padding_scores_empty_classes_zero_like_sklearn():
    rng = np.random.default_rng(11)
    y_true, y_score = random_problem(rng, 50, 4)
    y_true[:, 2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = average_precision_score(y_true, y_score, average="macro")
    result = padded_cmap(y_true, y_score, padding_rows=0)
    assert result.n_classes_scored == 4
    assert result.value == pytest.approx(expected, abs=TOL)
    assert result.value < cmap(y_true, y_score).value  # the empty class pulls it down


def test_padded_cmap_logit_scores_padding_ties_with_large_scores():
    # Padding uses score 1.0: with logits > 1, padded rows are no longer on top, so the value
    # differs from the probability version -- the function must mirror that, like sklearn.
    rng = np.random.default_rng(12)
    y_true, logits = random_problem(rng, 60, 3)
    logits = logits * 3
    padded_true = np.vstack([y_true, np.ones((5, 3), dtype=int)])
    padded_score = np.vstack([logits, np.ones((5, 3))])
    expected = average_precision_score(padded_true, padded_score, average="macro")
    assert padded_cmap(y_true, logits).value == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("seed", [13, 14, 15])
def test_top1_matches_reference(seed):
    rng = np.random.default_rng(seed)
    y_true, y_score = random_problem(rng, 90, 7, prevalence=0.15)
    y_score = np.round(y_score)  # ties at the top: first class wins, as in the reference
    y_true[:5] = 0
    expected_value, expected_rows = reference_top1(y_true, y_score)
    result = top1_accuracy(y_true, y_score)
    assert result.n_classes_scored == expected_rows == int((y_true.sum(axis=1) > 0).sum())
    assert result.value == pytest.approx(expected_value, abs=TOL)


def test_top1_ignores_rows_without_labels():
    y_true = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 1], [0, 0, 0]])
    y_score = np.array([[0.9, 0.1, 0.0], [0.9, 0.0, 0.0], [0.8, 0.1, 0.2], [0.0, 0.0, 1.0]])
    assert top1_accuracy(y_true, y_score) == MetricValue(0.5, 2)


def test_nothing_scorable_gives_nan_and_zero_counts():
    y_true = np.zeros((6, 3), dtype=int)
    y_score = np.random.default_rng(16).random((6, 3))
    for metric in (cmap, class_wise_auc, top1_accuracy):
        result = metric(y_true, y_score)
        assert math.isnan(result.value) and result.n_classes_scored == 0
    assert math.isnan(chance_cmap(y_true))
    # Padding rescues every class: 5 padded positives score 1.0 on top -> AP 1 each.
    assert padded_cmap(y_true, y_score) == MetricValue(1.0, 3)
    empty = np.zeros((0, 3))
    assert cmap(empty, empty).n_classes_scored == 0
    assert math.isnan(cmap(empty, empty).value)
    assert padded_cmap(empty, empty) == MetricValue(1.0, 3)


def test_chance_cmap_is_mean_prevalence_of_present_classes():
    y_true = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    # present classes 0, 2, 3 with prevalences 1/4, 1/4, 3/4; class 1 is dropped
    assert chance_cmap(y_true) == pytest.approx((0.25 + 0.25 + 0.75) / 3, abs=1e-15)


def test_chance_cmap_equals_empirical_cmap_of_random_scores():
    rng = np.random.default_rng(17)
    rows, classes = 2000, 20
    prevalence = rng.uniform(0.02, 0.4, size=classes)
    y_true = (rng.random((rows, classes)) < prevalence).astype(int)
    y_true[:, 0] = 0  # dropped from both cmAP and chance
    draws = np.array([cmap(y_true, rng.random((rows, classes))).value for _ in range(60)])
    chance = chance_cmap(y_true)
    assert draws.mean() == pytest.approx(chance, abs=0.006)
    # Exact expectation of AP under a random ranking (module docstring) is a bit higher.
    n_pos = y_true.sum(axis=0)[1:]
    harmonic = np.sum(1.0 / np.arange(1, rows + 1))
    exact = np.mean((harmonic + (n_pos - 1) / (rows - 1) * (rows - harmonic)) / rows)
    assert exact > chance
    assert abs(draws.mean() - exact) < 3 * draws.std(ddof=1) / np.sqrt(len(draws)) + 1e-4


def test_per_class_scores_columns_match():
    rng = np.random.default_rng(18)
    y_true, y_score = random_problem(rng, 70, 5)
    y_true[:, 1] = 0
    y_true[:, 3] = 1
    names = ["amerob", "norcar", "blujay", "houspa", "mallar3"]
    table = per_class_scores(y_true, y_score, names)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["class_name", "support", "n_negatives", "ap", "auc"]
    assert table["class_name"].tolist() == names
    np.testing.assert_array_equal(table["support"], y_true.sum(axis=0))
    np.testing.assert_array_equal(table["n_negatives"], 70 - y_true.sum(axis=0))
    assert table["support"].dtype == np.int64 and table["n_negatives"].dtype == np.int64
    np.testing.assert_allclose(table["ap"], sklearn_ap(y_true, y_score), atol=TOL)
    np.testing.assert_allclose(table["auc"], sklearn_auc(y_true, y_score), atol=TOL)
    assert np.isnan(table.loc[1, "ap"]) and np.isnan(table.loc[3, "auc"])
    with pytest.raises(ValueError, match="3 names but .* 5 columns"):
        per_class_scores(y_true, y_score, names[:3])


def test_compute_all_keys_and_values():
    rng = np.random.default_rng(19)
    y_true, y_score = random_problem(rng, 100, 6)
    y_true[:, 0] = 0
    results = compute_all(y_true, y_score)
    assert METRICS == ("cmAP", "AUC", "pcmAP", "top1")
    assert tuple(results) == METRICS
    assert results["cmAP"] == cmap(y_true, y_score)
    assert results["AUC"] == class_wise_auc(y_true, y_score)
    assert results["pcmAP"] == padded_cmap(y_true, y_score, padding_rows=5)
    assert results["top1"] == top1_accuracy(y_true, y_score)
    assert results["cmAP"].n_classes_scored == 5 and results["pcmAP"].n_classes_scored == 6
    assert all(isinstance(value.value, float) for value in results.values())


def test_metric_value_is_frozen():
    value = MetricValue(0.5, 3)
    with pytest.raises(AttributeError):
        value.value = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- errors


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"shapes differ.*\(4, 3\).*\(4, 2\)"):
        cmap(np.zeros((4, 3)), np.zeros((4, 2)))


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 2, 2))])
def test_non_2d_raises(bad):
    with pytest.raises(ValueError, match="y_true must be 2-D"):
        average_precision_per_class(bad, bad)
    with pytest.raises(ValueError, match="y_score must be 2-D"):
        roc_auc_per_class(np.zeros((4, 1)), np.zeros(4))


def test_nan_score_raises_with_location():
    y_score = np.zeros((3, 2))
    y_score[2, 1] = np.nan
    for metric in (cmap, class_wise_auc, top1_accuracy, padded_cmap, compute_all):
        with pytest.raises(ValueError, match=r"NaN.*row 2, class 1"):
            metric(np.ones((3, 2)), y_score)


def test_non_binary_truth_raises():
    with pytest.raises(ValueError, match=r"only 0 and 1.*row 1, class 0"):
        cmap(np.array([[1, 0], [2, 0]]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        chance_cmap(np.array([[0.5]]))
    with pytest.raises(ValueError, match="dtype"):
        cmap(np.array([["a"]]), np.zeros((1, 1)))


def test_bad_padding_raises():
    with pytest.raises(ValueError, match="padding_rows must be >= 0"):
        padded_cmap(np.ones((2, 2)), np.ones((2, 2)), padding_rows=-1)
    with pytest.raises(ValueError, match="padding_rows must be an int"):
        padded_cmap(np.ones((2, 2)), np.ones((2, 2)), padding_rows=2.5)  # type: ignore[arg-type]
