"""From probe predictions to score tables: one row per (fold, split, probe, metric), plus per-class rows.

``valid`` scores come from each fold's out-of-fold validation windows; ``test`` scores from each fold's
model on the task's held-out test split (BirdSet's ``test_5s`` soundscape windows, the demo's soundscapes).
The leaderboard's mean and std are taken over folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from birdassets.metrics import chance_cmap, compute_all, per_class_scores

SCORE_COLUMNS = ["fold", "split", "probe", "metric", "value", "n_classes_scored"]
CLASS_SCORE_COLUMNS = ["fold", "split", "probe", "class_name", "support", "ap", "auc"]


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
    scores_frame = pd.DataFrame(score_rows, columns=SCORE_COLUMNS)
    class_frame = pd.concat(class_frames, ignore_index=True)[CLASS_SCORE_COLUMNS]
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
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def ap_chart_markdown(class_scores: pd.DataFrame, split: str = "valid", width: int = 30) -> str:
    """A per-class AP bar chart (mean over folds and probes' best) as a Markdown table for the Dagster UI."""
    rows = class_scores[class_scores["split"] == split]
    if rows.empty:
        return "_no per-class scores_"
    table = (
        rows.groupby(["class_name", "probe"])
        .agg(ap=("ap", "mean"), support=("support", "sum"))
        .reset_index()
        .pivot(index="class_name", columns="probe", values="ap")
    )
    lines = ["| class | " + " | ".join(f"{p} AP" for p in table.columns) + " |"]
    lines.append("|---|" + "---|" * len(table.columns))
    for name, values in table.iterrows():
        cells = []
        for value in values:
            if np.isnan(value):
                cells.append("n/a")
            else:
                cells.append(f"`{'█' * int(round(value * width)):<{width}}` {value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
