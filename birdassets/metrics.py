"""Bioacoustic benchmark metrics (BirdSet, BirdCLEF), vectorised over classes with numpy.

Inputs, everywhere:

* ``y_true`` ``[rows, classes]`` multi-hot truth, values in {0, 1} (bool, integer, or float
  holding exactly 0/1);
* ``y_score`` ``[rows, classes]`` real scores (probabilities or logits; AP and ROC-AUC depend only
  on the order of the scores within a column, top-1 only on the order within a row). NaN is
  rejected; +-inf is allowed (it is orderable).

Both must be 2-D with equal shapes; bad input raises :class:`ValueError` naming the problem.

Per-class building blocks
-------------------------
``average_precision_per_class``
    AP_c = (1 / P_c) * sum_{i : y_ic = 1} precision_c(t_i), where t_i is the score of row i and
    precision_c(t) = (#positives with score >= t) / (#rows with score >= t). Tied scores form one
    threshold, so this is identical to ``sklearn.metrics.average_precision_score`` on column c
    (the uninterpolated step integral -sum(diff(recall) * precision)). NaN when P_c = 0 (sklearn
    would return 0 with a warning; we keep "undefined" distinguishable from "bad").
``roc_auc_per_class``
    Mann-Whitney form AUC_c = (R_c - P_c (P_c + 1) / 2) / (P_c N_c), with R_c the sum of the
    ascending ranks of the positives (tied scores share their average rank); identical to
    ``sklearn.metrics.roc_auc_score`` on column c. NaN when P_c = 0 or N_c = 0.

Benchmark metrics (each returns :class:`MetricValue`: ``value`` plus how many items it averaged)
-----------------------------------------------------------------------------------------------
``cmap`` -- **BirdSet cmAP** ("class-wise mean AP", BirdSet's main metric, Rauch et al.,
    ICLR 2025, arXiv 2403.10380): unweighted mean of AP_c over the classes with >= 1 positive.
    BirdSet logs ``torchmetrics.MultilabelAveragePrecision(average="macro", thresholds=None)``
    with torchmetrics pinned to 1.2.0, where a class without positives gets recall 0/0 = NaN and
    is dropped from the macro mean -- which is what we do. (torchmetrics >= 1.4.0 instead gives
    such classes AP = 0 and averages them in, so newer installs report lower numbers.)
    ``n_classes_scored`` = number of classes with >= 1 positive.
``class_wise_auc`` -- **BirdCLEF 2024 / BirdCLEF+ 2025 Kaggle metric** ("birdclef-roc-auc":
    "macro-averaged ROC-AUC score that ignores all classes that have no true positive labels"):
    unweighted mean of AUC_c over classes with >= 1 positive. Rows without labels still count as
    negatives for every scored class. A class whose every row is positive has no negatives, so its
    AUC is undefined; Kaggle's code would hand it to sklearn (which returns NaN / raises) -- we
    skip it as well and it is not counted in ``n_classes_scored``. (Unlike torchmetrics'
    multilabel AUROC used by BirdSet, which gives an all-negative class AUC = 0 and averages it
    in; that variant is deliberately not reproduced.)
``padded_cmap`` -- **BirdCLEF 2023 padded cmAP**: append ``padding_rows`` (Kaggle: 5) rows of
    all ones to BOTH truth and scores, then ``sklearn.metrics.average_precision_score(
    average="macro")`` on the padded arrays, i.e. the mean of AP over ALL classes. With
    ``padding_rows >= 1`` every class has positives, so nothing is undefined; with
    ``padding_rows = 0`` a class without positives gets AP = 0 exactly as sklearn does.
    ``n_classes_scored`` = number of classes (all of them). Also BirdSet's ``pcmAP``.
``top1_accuracy`` -- BirdSet ``TopKAccuracy(topk=1, include_nocalls=False)``: over the rows with
    >= 1 positive label, the fraction whose highest-scoring class (``argmax``; the first class
    wins a tie) is a positive. Rows without labels ("no-call") are removed from numerator AND
    denominator. ``n_classes_scored`` here is the NUMBER OF ROWS scored, not classes.
``chance_cmap`` -- the cmAP of random scores, approximated by the mean prevalence P_c / n over
    classes with >= 1 positive. The exact expectation of AP_c under a uniformly random ranking is
    (1/n) [H_n + (P_c - 1)/(n - 1) (n - H_n)] (H_n the n-th harmonic number), which exceeds the
    prevalence by about (1 - P_c/n) ln(n) / n, i.e. the approximation is good for many rows.

Every metric value is NaN (with ``n_classes_scored = 0``) when nothing could be scored.

Sources: BirdSet ``birdset/modules/metrics/multilabel.py`` (cmAP, pcmAP, TopKAccuracy) and
torchmetrics v1.2.0 ``functional/classification/{precision_recall_curve,average_precision}.py``;
Kaggle BirdCLEF 2023 evaluation page (padded cmAP); Kaggle metric ``birdclef-roc-auc`` for
BirdCLEF 2024/2025. See ``shared/research/birdset_birdclef.md`` sections 1b, 2a, 2b.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "MetricValue",
    "average_precision_per_class",
    "chance_cmap",
    "class_wise_auc",
    "cmap",
    "compute_all",
    "padded_cmap",
    "per_class_scores",
    "roc_auc_per_class",
    "top1_accuracy",
]

METRICS: tuple[str, ...] = ("cmAP", "AUC", "pcmAP", "top1")

# Per-class work is done on blocks of whole columns holding at most this many cells, so that
# e.g. 200k rows x 10k classes never needs several full-size float64 temporaries at once.
_MAX_BLOCK_CELLS = 1 << 22


@dataclass(frozen=True)
class MetricValue:
    """One benchmark number and how many items entered its average.

    value: the metric, NaN when nothing could be scored.
    n_classes_scored: how many classes entered the macro average (for ``top1``: how many rows).
    """

    value: float
    n_classes_scored: int


# --------------------------------------------------------------------------- validation


def _validate_truth(y_true: object, name: str = "y_true") -> np.ndarray:
    """``[rows, classes]`` truth as bool; raises ValueError unless 2-D with values in {0, 1}."""
    array = np.asarray(y_true)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, classes], got shape {array.shape}")
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must hold 0/1 as bool or numbers, got dtype {array.dtype}")
    is_binary = (array == 0) | (array == 1)
    if not is_binary.all():
        bad = np.argwhere(~is_binary)[0]
        raise ValueError(
            f"{name} must contain only 0 and 1; found {array[tuple(bad)]!r} at "
            f"[row {bad[0]}, class {bad[1]}]"
        )
    return array == 1


def _validate(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(y_true bool [rows, classes], y_score float64 [rows, classes])``."""
    truth = _validate_truth(y_true)
    score = np.asarray(y_score)
    if score.ndim != 2:
        raise ValueError(f"y_score must be 2-D [rows, classes], got shape {score.shape}")
    if truth.shape != score.shape:
        raise ValueError(
            f"y_true and y_score shapes differ: y_true {truth.shape} vs y_score {score.shape}"
        )
    if not (
        score.dtype == bool
        or np.issubdtype(score.dtype, np.integer)
        or np.issubdtype(score.dtype, np.floating)
    ):
        raise ValueError(f"y_score must be real numbers, got dtype {score.dtype}")
    score = score.astype(np.float64, copy=False)
    nan = np.isnan(score)
    if nan.any():
        first = np.argwhere(nan)[0]
        raise ValueError(
            f"y_score contains {int(nan.sum())} NaN value(s), first at "
            f"[row {first[0]}, class {first[1]}]"
        )
    return truth, score


def _column_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of whole columns, each block at most ``_MAX_BLOCK_CELLS`` cells (>= 1 column)."""
    width = max(1, _MAX_BLOCK_CELLS // max(n_rows, 1))
    for start in range(0, n_cols, width):
        yield slice(start, min(start + width, n_cols))


# --------------------------------------------------------------------------- per-class scores


@dataclass(frozen=True)
class _RankedColumns:
    """Columns sorted by descending score, with tie groups: all arrays ``[cols, rows]``.

    ``truth`` is the sorted truth; row position p belongs to the tie group spanning positions
    ``group_start[p] .. group_end[p]`` (inclusive). The order inside a tie group is arbitrary
    (unstable sort), which is harmless: every quantity below depends only on the groups.
    """

    truth: np.ndarray
    group_start: np.ndarray
    group_end: np.ndarray


def _rank_columns(truth: np.ndarray, score: np.ndarray) -> _RankedColumns:
    """Sort each column of a checked ``[rows, cols]`` block by descending score."""
    score_by_class = np.ascontiguousarray(score.T)
    order = np.argsort(-score_by_class, axis=1)
    sorted_score = np.take_along_axis(score_by_class, order, axis=1)
    sorted_truth = np.take_along_axis(np.ascontiguousarray(truth.T), order, axis=1)
    n_cols, n_rows = sorted_score.shape
    starts_group = np.ones((n_cols, n_rows), dtype=bool)
    starts_group[:, 1:] = sorted_score[:, 1:] != sorted_score[:, :-1]
    ends_group = np.ones((n_cols, n_rows), dtype=bool)
    ends_group[:, :-1] = starts_group[:, 1:]
    position = np.arange(n_rows)
    group_start = np.maximum.accumulate(np.where(starts_group, position, 0), axis=1)
    end_or_sentinel = np.where(ends_group, position, n_rows)
    group_end = np.minimum.accumulate(end_or_sentinel[:, ::-1], axis=1)[:, ::-1]
    return _RankedColumns(truth=sorted_truth, group_start=group_start, group_end=group_end)


def _average_precision_block(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AP per column of checked ``[rows, cols]`` blocks -> ``[cols]`` (NaN: no positives).

    AP = (1/P) sum over positives of the precision at the END of the positive's tie group
    (tied scores are one threshold, as in sklearn).
    """
    n_rows, n_cols = truth.shape
    if n_rows == 0:
        return np.full(n_cols, np.nan)
    ranked = _rank_columns(truth, score)
    true_positives = np.cumsum(ranked.truth, axis=1, dtype=np.float64)
    precision = true_positives / np.arange(1, n_rows + 1, dtype=np.float64)
    precision_at_group_end = np.take_along_axis(precision, ranked.group_end, axis=1)
    n_positive = true_positives[:, -1]
    summed = np.where(ranked.truth, precision_at_group_end, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_positive > 0, summed / n_positive, np.nan)


def _roc_auc_block(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC per column of checked ``[rows, cols]`` blocks -> ``[cols]`` (NaN: one class).

    Mann-Whitney: AUC = (R - P(P+1)/2) / (P N), R the sum of the positives' ascending average
    ranks. Descending position p (0-based) has ascending rank n - p; a tie group spanning
    positions a..b shares the average rank n - (a + b) / 2.
    """
    n_rows, n_cols = truth.shape
    if n_rows == 0:
        return np.full(n_cols, np.nan)
    ranked = _rank_columns(truth, score)
    average_rank = n_rows - 0.5 * (ranked.group_start + ranked.group_end)
    n_positive = ranked.truth.sum(axis=1, dtype=np.float64)
    n_negative = n_rows - n_positive
    positive_rank_sum = np.where(ranked.truth, average_rank, 0.0).sum(axis=1)
    u_statistic = positive_rank_sum - n_positive * (n_positive + 1.0) / 2.0
    defined = (n_positive > 0) & (n_negative > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, u_statistic / (n_positive * n_negative), np.nan)


def _per_class(block_fn, truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Apply ``block_fn`` to blocks of whole columns of ``[rows, classes]`` -> ``[classes]``."""
    n_rows, n_cols = truth.shape
    out = np.empty(n_cols, dtype=np.float64)
    for cols in _column_blocks(n_rows, n_cols):
        out[cols] = block_fn(truth[:, cols], score[:, cols])
    return out


def average_precision_per_class(y_true: object, y_score: object) -> np.ndarray:
    """Average precision per class, ``[classes]`` float64; NaN for classes with no positives.

    Identical to ``sklearn.metrics.average_precision_score(y_true[:, c], y_score[:, c])`` for
    every class with a positive, tied scores included (one threshold per distinct score).
    """
    truth, score = _validate(y_true, y_score)
    return _per_class(_average_precision_block, truth, score)


def roc_auc_per_class(y_true: object, y_score: object) -> np.ndarray:
    """ROC-AUC per class, ``[classes]`` float64; NaN where a class lacks positives or negatives.

    Mann-Whitney U with average ranks for ties, identical to ``sklearn.metrics.roc_auc_score``.
    """
    truth, score = _validate(y_true, y_score)
    return _per_class(_roc_auc_block, truth, score)


# --------------------------------------------------------------------------- benchmark metrics


def _macro_mean(per_class: np.ndarray, included: np.ndarray) -> MetricValue:
    n_included = int(included.sum())
    if n_included == 0:
        return MetricValue(value=float("nan"), n_classes_scored=0)
    return MetricValue(value=float(per_class[included].mean()), n_classes_scored=n_included)


def cmap(y_true: object, y_score: object) -> MetricValue:
    """BirdSet cmAP: mean AP over classes with >= 1 positive (torchmetrics 1.2.0 semantics)."""
    truth, score = _validate(y_true, y_score)
    ap = _per_class(_average_precision_block, truth, score)
    return _macro_mean(ap, truth.any(axis=0))


def class_wise_auc(y_true: object, y_score: object) -> MetricValue:
    """BirdCLEF 2024/25 macro ROC-AUC over classes with >= 1 positive.

    All-positive classes (no negatives, AUC undefined) are skipped too and not counted.
    """
    truth, score = _validate(y_true, y_score)
    auc = _per_class(_roc_auc_block, truth, score)
    return _macro_mean(auc, ~np.isnan(auc))


def padded_cmap(y_true: object, y_score: object, padding_rows: int = 5) -> MetricValue:
    """BirdCLEF 2023 padded cmAP: macro AP over ALL classes after appending all-ones rows.

    ``padding_rows`` rows of ones are appended to both truth and scores (Kaggle uses 5), then the
    result equals ``sklearn.metrics.average_precision_score(..., average="macro")`` on the padded
    arrays (a class without positives, possible only when ``padding_rows == 0``, scores 0 as in
    sklearn). ``n_classes_scored`` is the number of classes.
    """
    truth, score = _validate(y_true, y_score)
    if isinstance(padding_rows, bool) or not isinstance(padding_rows, (int, np.integer)):
        raise ValueError(f"padding_rows must be an int, got {padding_rows!r}")
    if padding_rows < 0:
        raise ValueError(f"padding_rows must be >= 0, got {padding_rows}")
    n_classes = truth.shape[1]
    padded_truth = np.concatenate([truth, np.ones((padding_rows, n_classes), dtype=bool)])
    padded_score = np.concatenate([score, np.ones((padding_rows, n_classes), dtype=np.float64)])
    ap = _per_class(_average_precision_block, padded_truth, padded_score)
    ap = np.where(padded_truth.any(axis=0), ap, 0.0)
    return _macro_mean(ap, np.ones(n_classes, dtype=bool))


def top1_accuracy(y_true: object, y_score: object) -> MetricValue:
    """Fraction of rows with >= 1 positive whose argmax class is a positive.

    Rows without labels are ignored; ``n_classes_scored`` is the number of rows scored.
    A tie for the top score goes to the first class (``np.argmax``).
    """
    truth, score = _validate(y_true, y_score)
    labelled = truth.any(axis=1)
    n_labelled = int(labelled.sum())
    if n_labelled == 0:
        return MetricValue(value=float("nan"), n_classes_scored=0)
    top = np.argmax(score[labelled], axis=1)
    hits = np.take_along_axis(truth[labelled], top[:, None], axis=1)[:, 0]
    return MetricValue(value=float(hits.mean()), n_classes_scored=n_labelled)


def chance_cmap(y_true: object) -> float:
    """Expected cmAP of random scores ~= mean prevalence over classes with >= 1 positive.

    NaN when no class has a positive. This is the many-rows limit; the exact expectation is a
    little higher (see the module docstring).
    """
    truth = _validate_truth(y_true)
    n_positive = truth.sum(axis=0)
    present = n_positive > 0
    if not present.any():
        return float("nan")
    return float((n_positive[present] / truth.shape[0]).mean())


def per_class_scores(y_true: object, y_score: object, classes: Sequence[str]) -> pd.DataFrame:
    """One row per class: ``class_name, support, n_negatives, ap, auc`` (NaN where undefined).

    ``support`` is the number of positive rows, ``n_negatives`` the number of negative rows.
    """
    truth, score = _validate(y_true, y_score)
    names = [str(name) for name in classes]
    if len(names) != truth.shape[1]:
        raise ValueError(
            f"classes has {len(names)} names but y_true/y_score have {truth.shape[1]} columns"
        )
    support = truth.sum(axis=0).astype(np.int64)
    return pd.DataFrame(
        {
            "class_name": pd.Series(names, dtype=object),
            "support": support,
            "n_negatives": np.int64(truth.shape[0]) - support,
            "ap": _per_class(_average_precision_block, truth, score),
            "auc": _per_class(_roc_auc_block, truth, score),
        }
    )


def compute_all(y_true: object, y_score: object) -> dict[str, MetricValue]:
    """All benchmark metrics, keyed by :data:`METRICS` (``cmAP, AUC, pcmAP, top1``)."""
    truth, score = _validate(y_true, y_score)
    return {
        "cmAP": cmap(truth, score),
        "AUC": class_wise_auc(truth, score),
        "pcmAP": padded_cmap(truth, score),
        "top1": top1_accuracy(truth, score),
    }
