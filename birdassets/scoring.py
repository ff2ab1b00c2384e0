"""From probe predictions to score tables: one row per (fold, split, probe, metric), plus per-class rows.

``valid`` scores come from each fold's out-of-fold validation windows; ``test`` scores from each fold's
model on the task's held-out test split (BirdSet's ``test_5s`` soundscape windows, the demo's soundscapes).
The leaderboard's mean and std are taken over folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.artifacts import probe_classes, read_probe_predictions
from birdassets.metrics import chance_cmap, compute_all, per_class_scores
from birdassets.store.validation import CLASS_SCORE_COLUMNS, SCORE_COLUMNS  # the tables' columns, defined once



def score_fold_predictions(
    probe: str,
    classes: tuple[str, ...],
    fold_of: np.ndarray,
    y_train: np.ndarray,
    valid_scores: np.ndarray,
    y_test: np.ndarray,
    test_scores: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score one probe's predictions for every fold.

    Args:
        probe: probe name stored with each row.
        classes: label names ``[classes]``.
        fold_of: ``[train_windows]`` validation fold of each training window.
        y_train: ``[train_windows, classes]`` multi-hot truth.
        valid_scores: ``[train_windows, classes]`` out-of-fold probabilities.
        y_test: ``[test_windows, classes]`` truth of the test split (may have 0 rows).
        test_scores: ``[folds, test_windows, classes]`` each fold model's test probabilities.

    Returns:
        ``(scores, class_scores)`` with :data:`SCORE_COLUMNS` / :data:`CLASS_SCORE_COLUMNS`.
    """
    score_rows, class_frames = [], []
    n_folds = int(fold_of.max()) + 1
    for fold in range(n_folds):
        mask = fold_of == fold
        evaluations = [("valid", y_train[mask], valid_scores[mask])]
        if len(y_test):
            evaluations.append(("test", y_test, test_scores[fold]))
        for split, truth, scores in evaluations:
            for metric, result in compute_all(truth, scores).items():
                score_rows.append((fold, split, probe, metric, result.value, result.n_classes_scored))
            per_class = per_class_scores(truth, scores, classes)
            class_frames.append(per_class.assign(fold=fold, split=split, probe=probe))
    scores_frame = pd.DataFrame(score_rows, columns=list(SCORE_COLUMNS))
    class_frame = pd.concat(class_frames, ignore_index=True)[list(CLASS_SCORE_COLUMNS)]
    return scores_frame, class_frame


CHANCE_PROBE = "chance"


def chance_scores(fold_of: np.ndarray, y_train: np.ndarray, y_test: np.ndarray) -> pd.DataFrame:
    """The cmAP of uninformative scores per fold and split (mean prevalence of the scored classes), stored
    as probe ``"chance"`` so every leaderboard shows the level a probe has to beat."""
    rows = []
    for fold in range(int(fold_of.max()) + 1):
        evaluations = [("valid", y_train[fold_of == fold])] + ([("test", y_test)] if len(y_test) else [])
        for split, truth in evaluations:
            scored = int((truth.sum(axis=0) > 0).sum())
            rows.append((fold, split, CHANCE_PROBE, "cmAP", chance_cmap(truth), scored))
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def score_probes(directory: Path, probes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the saved predictions of every probe in ``probes`` (``probes/<task>/<checkpoint>/``):
    ``(scores, class_scores)`` over folds and splits, with the ``chance`` pseudo-probe first."""
    classes = probe_classes(directory)
    score_frames, class_frames = [], []
    for name in probes:
        saved = read_probe_predictions(directory, name)
        if not score_frames:
            score_frames.append(chance_scores(saved.fold_of, saved.y_train, saved.y_test))
        scores, class_scores = score_fold_predictions(
            name, classes, saved.fold_of, saved.y_train, saved.valid_scores, saved.y_test, saved.test_scores
        )
        score_frames.append(scores)
        class_frames.append(class_scores)
    return pd.concat(score_frames, ignore_index=True), pd.concat(class_frames, ignore_index=True)
