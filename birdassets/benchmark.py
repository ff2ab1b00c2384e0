"""The benchmark of one task x checkpoint, from files on disk to files on disk.

``fit_probes`` reads the embeddings and folds, trains every configured probe for all folds and writes their
predictions; ``score_probes`` turns those predictions into score tables. Both are plain functions of the
settings so the Dagster assets stay thin and the CLI, notebooks and tests can call them directly.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from birdassets.datasets.mel_tfds import MelDataset, build_mel_dataset, dataset_dir
from birdassets.embeddings import read_embeddings
from birdassets.evaluation import chance_scores, score_fold_predictions
from birdassets.probes import PROBES, fit_probe
from birdassets.settings import Settings
from birdassets.sources.manifest import Manifest
from birdassets.sources.registry import read_source

SUMMARY = "summary.parquet"
CLASSES = "classes.json"
PARAM_PREFIX = "param/"  # probe parameters in <probe>.npz, leading fold axis


def mel_dataset_for(settings: Settings, task: str) -> MelDataset:
    """The mel dataset of a task's current manifest (``manifests/<task>.parquet``) and preset."""
    manifest = Manifest.read(settings.manifest_path(task))
    return MelDataset(dataset_dir(settings.mel_root(task), manifest, settings.task_preset(task)))


def ensure_mel_dataset(settings: Settings, task: str) -> MelDataset:
    """The task's mel dataset, reading the source and building it first when missing (idempotent)."""
    path = settings.manifest_path(task)
    manifest = Manifest.read(path) if path.exists() else read_source(settings.dataset(task), settings.task_preset(task))
    if not path.exists():
        manifest.write(path)
    return build_mel_dataset(manifest, settings.task_preset(task), settings.mel_root(task))


def fold_assignment(settings: Settings, task: str, window_ids: pd.Series) -> np.ndarray:
    """``[windows]`` validation fold of each training window, from the task's folds file."""
    path = settings.folds_path(task)
    frame = pd.read_parquet(path)
    fold_by_window = dict(zip(frame["window_id"], frame["fold"], strict=True))
    missing = [w for w in window_ids if w not in fold_by_window]
    if missing:
        raise ValueError(f"{path}: {len(missing)} training windows have no fold, e.g. {missing[:3]}")
    return window_ids.map(fold_by_window).to_numpy(dtype=np.int64)


def fit_probes(settings: Settings, task: str, checkpoint: str) -> Path:
    """Fit every probe in ``settings.probes`` on a task x checkpoint's embeddings, all folds at once.

    Writes ``probes/<task>/<checkpoint>/<probe>.npz`` (``valid_scores [train_windows, classes]``,
    ``test_scores [folds, test_windows, classes]``, ``train_loss [folds, steps]``, ``fold_of``, ``y_train``,
    ``y_test``) plus ``summary.parquet``, atomically (staging folder + rename). Returns the folder.
    """
    embedded = read_embeddings(settings.embeddings_dir(task, checkpoint))
    x_train, y_train, index_train = embedded.split("train")
    x_test, y_test, _ = embedded.split("test")
    fold_of = fold_assignment(settings, task, index_train["window_id"])
    directory = settings.probes_dir(task, checkpoint)
    staging = directory.with_name(directory.name + ".incomplete")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows = []
    for name in settings.probes:
        started = time.perf_counter()
        result = fit_probe(PROBES[name], np.asarray(x_train), y_train, fold_of, np.asarray(x_test), settings.n_folds)
        np.savez(
            staging / f"{name}.npz",
            valid_scores=result.valid_scores,
            test_scores=result.test_scores,
            train_loss=result.train_loss,
            fold_of=fold_of,
            y_train=y_train,
            y_test=y_test,
            **{f"{PARAM_PREFIX}{key}": value for key, value in result.params.items()},
        )
        loss = result.train_loss
        rows.append(
            {
                "probe": name,
                "seconds": time.perf_counter() - started,
                "final_train_loss": float(loss[:, -1].mean()) if loss.size else float("nan"),
            }
        )
    pd.DataFrame(rows).to_parquet(staging / SUMMARY, index=False)
    (staging / CLASSES).write_text(json.dumps(list(embedded.classes)))
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return directory


def score_probes(settings: Settings, task: str, checkpoint: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every probe's predictions: ``(scores, class_scores)`` over folds and splits."""
    directory = settings.probes_dir(task, checkpoint)
    classes = tuple(json.loads((directory / CLASSES).read_text()))
    score_frames, class_frames = [], []
    for name in settings.probes:
        with np.load(directory / f"{name}.npz") as saved:
            if not score_frames:
                score_frames.append(chance_scores(saved["fold_of"], saved["y_train"], saved["y_test"]))
            scores, class_scores = score_fold_predictions(
                name,
                classes,
                saved["fold_of"],
                saved["y_train"],
                saved["valid_scores"],
                saved["y_test"],
                saved["test_scores"],
            )
        score_frames.append(scores)
        class_frames.append(class_scores)
    return pd.concat(score_frames, ignore_index=True), pd.concat(class_frames, ignore_index=True)


def load_probe(settings: Settings, task: str, checkpoint: str, probe: str) -> tuple[dict, tuple[str, ...]]:
    """The trained parameters of ``probe`` on ``task`` x ``checkpoint`` (leading fold axis) and its classes,
    for :func:`birdassets.probes.predict_probe` (e.g. detection with a benchmark probe)."""
    directory = settings.probes_dir(task, checkpoint)
    path = directory / f"{probe}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained {probe!r} probe for {task} x {checkpoint}; materialize "
                                "its probe asset first")
    with np.load(path) as saved:
        params = {key[len(PARAM_PREFIX):]: saved[key] for key in saved.files if key.startswith(PARAM_PREFIX)}
    if not params:
        raise FileNotFoundError(f"{path}: written by an older birdassets without probe parameters; re-materialize "
                                "the probe asset")
    return params, tuple(json.loads((directory / CLASSES).read_text()))
