"""A Kaggle submission from a trained supervised model: every window of every soundscape, the fold models averaged.

The path a BirdCLEF notebook runs under Kaggle's CPU limit, batched end to end::

    soundscape files --decode (birdassets.audio.io.load, the preset's rate)--> [samples] per file
      --stage A (window_starts / cut_windows)--> [windows, clip_samples]   (batches of ``batch_size`` windows,
                                                                           filled across files)
      --TFMelFrontend.model_input--> [batch, frames, mels]
      --each fold's model: logits, sigmoid--> mean over folds --> probabilities [batch, classes] in [0, 1]

A row is one window: ``row_id`` = ``<soundscape file stem>_<window end in whole seconds>`` (``_5``, ``_10``, ...;
a last partial window, kept when the preset keeps it (``min_last_s``), ends ``clip_s`` after its start, so a
62-s file ends with ``_65``), then one probability column per class of the model. The last batch is zero-padded
to ``batch_size`` windows, so the frontend and every model compile once.

:func:`write_submission` writes it as Kaggle's CSV, its columns in the order of the task's
``sample_submission.csv`` when there is one (:func:`submission_class_order`). A soundscape that cannot be
decoded is reported (``on_error``) and left out; the others are still predicted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from birdassets.atomic import atomic_path
from birdassets.audio.io import AudioError, load, probe
from birdassets.frontends.presets import MelPreset, get_preset
from birdassets.frontends.windowing import cut_windows, window_starts
from birdassets.sources.birdclef import SAMPLE_SUBMISSION_CSV, submission_row_id
from birdassets.supervised.model_folder import MODEL_RECORD, load_fold_models, read_model_record

ROW_ID = "row_id"
"""First column of a submission."""
DEFAULT_BATCH_SIZE = 64
"""Windows per forward pass (the last batch is zero-padded to it; fewer windows in all make one batch of them)."""

OnError = Callable[[Path, AudioError], None]
"""Told about each soundscape that cannot be decoded (it is left out)."""


class SubmissionError(ValueError):
    """The model folder cannot make a submission (its record, preset or outputs); the message names it."""


@dataclass(frozen=True)
class SubmissionModel:
    """A model folder ready to predict: its classes, its preset, its frontend and one Keras model per fold.

    Attributes:
        directory: the model folder (``Layout.models_dir(task, model)``).
        classes: class codes, the order of the models' outputs.
        preset: the frontend preset the models were trained on.
        models: the fold models, float32 logits ``[batch, classes]``.
        frontend: the preset's :class:`~birdassets.frontends.tf_mel.TFMelFrontend` (traced once, reused).
    """

    directory: Path
    classes: tuple[str, ...]
    preset: MelPreset
    models: tuple[Any, ...]
    frontend: Any


def _record_preset(record: dict[str, Any], path: Path, preset: MelPreset | None) -> MelPreset:
    """``preset`` (or the built-in of the record's name), checked against the record's name, hash and input shape."""
    preset = get_preset(record["preset"]) if preset is None else preset
    if preset.name != record["preset"] or record.get("preset_hash", preset.content_hash()) != preset.content_hash():
        raise SubmissionError(f"{path}: the model was trained on preset {record['preset']!r} "
                              f"(hash {str(record.get('preset_hash'))[:12]}), not on {preset.name!r} as configured now")
    if tuple(record["input_shape"]) != tuple(preset.input_shape):
        raise SubmissionError(f"{path}: input_shape {record['input_shape']} is not preset {preset.name!r}'s "
                              f"{list(preset.input_shape)}")
    return preset


def load_submission_model(model_dir: Path, preset: MelPreset | None = None) -> SubmissionModel:
    """Read ``model.json`` and load every fold's ``.keras`` model.

    Args:
        model_dir: the model folder.
        preset: the preset named in the record, as configured (a user preset); ``None``: the built-in one.

    Raises:
        SubmissionError: an incomplete folder, a record that is not JSON, another preset than the one trained on,
            no fold model (each named).
    """
    from birdassets.frontends.tf_mel import TFMelFrontend

    model_dir = Path(model_dir)
    try:
        record = read_model_record(model_dir)
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise SubmissionError(f"{model_dir}: cannot make a submission: {error}") from None
    preset = _record_preset(record, model_dir / MODEL_RECORD, preset)
    models = tuple(load_fold_models(model_dir))
    if not models:
        raise SubmissionError(f"{model_dir}: no fold models (fold_<k>.keras)")
    return SubmissionModel(model_dir, tuple(record["classes"]), preset, models, TFMelFrontend(preset))


# --------------------------------------------------------------------------------------------- windows


def file_windows(stem: str, duration_s: float, preset: MelPreset) -> tuple[list[str], np.ndarray]:
    """``(row ids [windows], starts [windows] float64 s)`` of one soundscape of ``duration_s`` seconds."""
    starts = np.asarray(window_starts(duration_s, preset), dtype=np.float64)
    return [submission_row_id(stem, start + preset.clip_s) for start in starts], starts


def soundscape_windows(paths: Sequence[Path], preset: MelPreset) -> tuple[list[str], np.ndarray]:
    """Row ids and window starts of soundscape files, from their headers, in file order.

    Returns:
        ``(row_ids [windows], starts [windows] float64 seconds)``, windows of all files concatenated.

    Raises:
        AudioError: a file cannot be probed (named).
    """
    row_ids, starts = [], []
    for path in paths:
        ids, first = file_windows(Path(path).stem, probe(path).duration_s, preset)
        row_ids += ids
        starts.append(first)
    return row_ids, np.concatenate(starts) if starts else np.zeros(0)


def planned_windows(paths: Sequence[Path], preset: MelPreset) -> int:
    """Windows of the soundscapes by their headers; a file whose header cannot be read counts 0 (decoding it will
    name its problem)."""
    total = 0
    for path in paths:
        try:
            total += len(window_starts(probe(path).duration_s, preset))
        except AudioError:
            continue
    return total


def window_batches(
    paths: Sequence[Path], preset: MelPreset, batch_size: int, on_error: OnError | None = None
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Decode the soundscapes one by one and yield their windows in batches filled across files.

    Yields:
        ``(row_ids [n], waves [n, clip_samples] float32)`` with ``n == batch_size`` except the last batch.

    Raises:
        AudioError: a soundscape cannot be decoded and there is no ``on_error`` (else it is told and skipped).
    """
    ids: list[str] = []
    waves: list[np.ndarray] = []
    for path in map(Path, paths):
        try:
            audio, _ = load(path, preset.sample_rate)
        except AudioError as error:
            if on_error is None:
                raise
            on_error(path, error)
            continue
        row_ids, starts = file_windows(path.stem, len(audio) / preset.sample_rate, preset)
        ids += row_ids
        waves.append(cut_windows(audio, starts, preset))
        while len(ids) >= batch_size:
            block = np.concatenate(waves)
            yield ids[:batch_size], block[:batch_size]
            ids, waves = ids[batch_size:], [block[batch_size:]]
    if ids:
        yield ids, np.concatenate(waves)


# ------------------------------------------------------------------------------------------- prediction


def fold_average(models: Sequence[Any], mel: np.ndarray) -> np.ndarray:
    """Mean over the fold models of ``sigmoid(logits)``: ``[batch, frames, mels]`` -> float64 ``[batch, classes]``."""
    return np.mean([expit(np.asarray(model.predict_on_batch(mel), np.float64)) for model in models], axis=0)


def predict_batches(
    model: SubmissionModel, paths: Sequence[Path], *, batch_size: int = DEFAULT_BATCH_SIZE,
    on_error: OnError | None = None,
) -> pd.DataFrame:
    """:func:`predict_soundscapes` with the model already loaded (what ``bench submission`` times). Fewer windows
    than ``batch_size`` in all make one batch of exactly those (no padding to compute).

    Raises:
        SubmissionError: the models give a non-finite probability (the window named).
    """
    batch_size = max(1, min(batch_size, planned_windows(paths, model.preset)))
    row_ids: list[str] = []
    blocks: list[np.ndarray] = []
    for ids, waves in window_batches(paths, model.preset, batch_size, on_error):
        padded = np.zeros((batch_size, waves.shape[1]), np.float32)  # one shape: one compile per model
        padded[: len(waves)] = waves
        probabilities = fold_average(model.models, model.frontend.model_input(padded).numpy())[: len(waves)]
        bad = ~np.isfinite(probabilities).all(axis=1)
        if bad.any():
            raise SubmissionError(f"{model.directory}: non-finite probabilities for {ids[int(np.argmax(bad))]}")
        row_ids += ids
        blocks.append(probabilities)
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(model.classes)))
    return pd.concat([pd.DataFrame({ROW_ID: row_ids}), pd.DataFrame(values, columns=list(model.classes))], axis=1)


def predict_soundscapes(
    model_dir: Path, soundscapes: list[Path], *, batch_size: int = DEFAULT_BATCH_SIZE,
    preset: MelPreset | None = None, on_error: OnError | None = None,
) -> pd.DataFrame:
    """Probabilities of every window of every soundscape, averaged over the folder's fold models.

    Args:
        model_dir: a model folder (``fold_<k>.keras`` + ``model.json``).
        soundscapes: audio files, predicted in this order.
        batch_size: windows per forward pass.
        preset: the record's preset as configured (user presets); ``None``: the built-in of that name.
        on_error: told about each file that cannot be decoded (left out); ``None``: such a file raises.

    Returns:
        ``row_id`` + one float64 column per class (the model's order), one row per window, values in [0, 1].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = load_submission_model(model_dir, preset)
    return predict_batches(model, soundscapes, batch_size=batch_size, on_error=on_error)


# ---------------------------------------------------------------------------------------------- writing


def submission_class_order(data_root: Path | None, classes: Sequence[str]) -> list[str]:
    """The submission's species columns: the header of ``data_root/sample_submission.csv`` after ``row_id``
    when the task's data folder has one, else ``classes`` (the task's order).

    Raises:
        SubmissionError: the sample submission has no ``row_id`` first column.
    """
    sample = None if data_root is None else Path(data_root) / SAMPLE_SUBMISSION_CSV
    if sample is None or not sample.is_file():
        return list(classes)
    header = list(pd.read_csv(sample, nrows=0).columns)
    if not header or header[0] != ROW_ID:
        raise SubmissionError(f"{sample}: first column is {header[:1]}, not {ROW_ID!r}")
    return header[1:]


def align_columns(frame: pd.DataFrame, class_order: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """``row_id`` + ``class_order`` columns: a class the frame lacks becomes a column of 0.0, a class of the frame
    not in the order is dropped.

    Returns:
        ``(frame, notices)``: one line per kind of mismatch (none when the classes agree).
    """
    predicted = [column for column in frame.columns if column != ROW_ID]
    missing = [code for code in class_order if code not in frame.columns]
    extra = [code for code in predicted if code not in set(class_order)]
    notices = []
    if missing:
        notices.append(f"{len(missing)} species of the submission are not predicted by the model, "
                       f"written as 0.0: {' '.join(missing)}")
    if extra:
        notices.append(f"{len(extra)} species of the model are not in the submission, dropped: {' '.join(extra)}")
    zeros = pd.DataFrame(0.0, index=frame.index, columns=missing)
    return pd.concat([frame, zeros], axis=1)[[ROW_ID, *class_order]], notices


def write_submission(frame: pd.DataFrame, out: Path, class_order: Sequence[str]) -> list[str]:
    """Write Kaggle's CSV atomically: ``row_id`` then ``class_order`` (:func:`align_columns`).

    Returns:
        the notices of :func:`align_columns` (for the caller to show).
    """
    aligned, notices = align_columns(frame, class_order)
    with atomic_path(out) as tmp:
        aligned.to_csv(tmp, index=False, float_format="%.6g")
    return notices
