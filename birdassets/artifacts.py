"""The files one step leaves for the next: folds, probe results, score tables with lineage, encoder records.

Formats (all published atomically through :mod:`birdassets.atomic`)::

    folds/<task>.parquet                 window_id, recording_id, fold
    probes/<task>/<checkpoint>/          <probe>.npz  valid_scores [train_windows, classes],
                                                      test_scores [folds, test_windows, classes],
                                                      train_loss [folds, steps], fold_of [train_windows],
                                                      y_train, y_test (multi-hot), param/<name> (leading fold axis)
                                         summary.parquet (probe, seconds, final_train_loss), classes.json
    scores/<task>/<checkpoint>/          scores.parquet, class_scores.parquet, lineage.json
    encoders/<checkpoint>.json           what the encoder asset restored (family, path, step, details)

Mel datasets (:mod:`birdassets.datasets.mel_tfds`), manifests (:mod:`birdassets.sources.manifest`) and
embeddings (:mod:`birdassets.embeddings`) own their formats.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.atomic import atomic_dir, atomic_path
from birdassets.lineage import Lineage

PROBE_SUMMARY = "summary.parquet"
PROBE_CLASSES = "classes.json"
PARAM_PREFIX = "param/"  # probe parameters inside <probe>.npz, leading fold axis
SCORES = "scores.parquet"
CLASS_SCORES = "class_scores.parquet"
LINEAGE = "lineage.json"


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    """``frame`` as parquet at ``path`` (no index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


# ----------------------------------------------------------------------------------------- folds


def fold_assignment(folds_path: Path, window_ids: pd.Series) -> np.ndarray:
    """``[windows]`` validation fold of each training window, from the task's folds file.

    Raises:
        ValueError: a training window has no fold (the folds are older than the embeddings).
    """
    frame = pd.read_parquet(folds_path)
    fold_by_window = dict(zip(frame["window_id"], frame["fold"], strict=True))
    missing = [w for w in window_ids if w not in fold_by_window]
    if missing:
        raise ValueError(f"{folds_path}: {len(missing)} training windows have no fold, e.g. {missing[:3]}")
    return window_ids.map(fold_by_window).to_numpy(dtype=np.int64)


# ---------------------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class ProbePredictions:
    """One probe's saved predictions on a task x checkpoint (see the module docstring for shapes)."""

    fold_of: np.ndarray
    y_train: np.ndarray
    valid_scores: np.ndarray
    y_test: np.ndarray
    test_scores: np.ndarray


def write_probe_results(directory: Path, results: Mapping[str, object], predictions: Mapping[str, np.ndarray],
                        summary: pd.DataFrame, classes: tuple[str, ...]) -> Path:
    """Publish every probe's ``ProbeResult`` (``results[name]``) with the shared ``predictions``
    (``fold_of``, ``y_train``, ``y_test``), the summary table and the class list, as one folder."""
    with atomic_dir(directory) as staging:
        for name, result in results.items():
            np.savez(
                staging / f"{name}.npz",
                valid_scores=result.valid_scores,
                test_scores=result.test_scores,
                train_loss=result.train_loss,
                **predictions,
                **{f"{PARAM_PREFIX}{key}": value for key, value in result.params.items()},
            )
        summary.to_parquet(staging / PROBE_SUMMARY, index=False)
        (staging / PROBE_CLASSES).write_text(json.dumps(list(classes)))
    return directory


def probe_classes(directory: Path) -> tuple[str, ...]:
    return tuple(json.loads((directory / PROBE_CLASSES).read_text()))


def read_probe_predictions(directory: Path, probe: str) -> ProbePredictions:
    with np.load(directory / f"{probe}.npz") as saved:
        return ProbePredictions(**{f.name: saved[f.name] for f in dataclasses.fields(ProbePredictions)})


def load_probe(directory: Path, probe: str, what: str) -> tuple[dict, tuple[str, ...]]:
    """The trained parameters of ``probe`` (leading fold axis) and its classes, for
    :func:`birdassets.probes.predict_probe`; ``what`` names the task x checkpoint in errors."""
    path = directory / f"{probe}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained {probe!r} probe for {what}; materialize its probe asset first")
    with np.load(path) as saved:
        params = {key[len(PARAM_PREFIX):]: saved[key] for key in saved.files if key.startswith(PARAM_PREFIX)}
    if not params:
        raise FileNotFoundError(f"{path}: written by an older birdassets without probe parameters; re-materialize "
                                "the probe asset")
    return params, probe_classes(directory)


# ---------------------------------------------------------------------------------------- scores


def write_scores(directory: Path, scores: pd.DataFrame, class_scores: pd.DataFrame, lineage: Lineage) -> Path:
    """Publish a task x checkpoint's score tables and lineage as one folder, so the lineage always describes
    the tables beside it."""
    with atomic_dir(directory) as staging:
        scores.to_parquet(staging / SCORES, index=False)
        class_scores.to_parquet(staging / CLASS_SCORES, index=False)
        (staging / LINEAGE).write_text(lineage.to_json())
    return directory


def read_scores(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, Lineage]:
    """``(scores, class_scores, lineage)`` as :func:`write_scores` wrote them."""
    lineage = Lineage(**json.loads((directory / LINEAGE).read_text()))
    return pd.read_parquet(directory / SCORES), pd.read_parquet(directory / CLASS_SCORES), lineage
