"""The model folder of one supervised model (``Layout.models_dir(task, model)``), written whole or not at all.

::

    fold_<k>.keras        fold k's selected model (k = 0..n_folds-1): keras.saving.load_model(path)
    model.json            what the model is and how it was trained (the ``record``, plus the facts of the result)
    predictions.npz       fold_of [rows], y_train [rows, classes], valid_scores [rows, classes] (out-of-fold
                          probabilities), y_test [test, classes], test_scores [folds, test, classes]
    history.parquet       fold, epoch, train_loss, val_loss, val_auc, seconds
    window_ids.parquet    window_id: the training windows, the order of every [rows] array

The folder is staged and published with :func:`birdassets.atomic.atomic_dir`; a reader finding it without one of
these files (a folder written by hand, or half copied) gets a ``FileNotFoundError`` naming the folder and file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from birdassets.atomic import atomic_dir, write_json
from birdassets.models.keras.keys import MODEL_RECORD

if TYPE_CHECKING:
    import keras

    from birdassets.supervised.cross_validation import FoldsResult

PREDICTIONS = "predictions.npz"
HISTORY = "history.parquet"
WINDOW_IDS = "window_ids.parquet"
PREDICTION_ARRAYS = ("fold_of", "y_train", "valid_scores", "y_test", "test_scores")
"""The arrays of ``predictions.npz`` (shapes in the module docstring)."""


def fold_model_name(fold: int) -> str:
    return f"fold_{fold}.keras"


def write_model_folder(directory: str | Path, result: FoldsResult, record: dict[str, Any]) -> Path:
    """Publish ``result`` as the model folder ``directory`` (replacing an older one); returns ``directory``.

    ``model.json`` is ``record`` (key, task, model, config hashes, ...) updated with the facts of ``result``:
    ``classes``, ``input_shape``, ``n_folds``, ``n_params``, ``precision``, ``train_seconds``, ``best_epochs``.
    """
    directory = Path(directory)
    facts = {"classes": list(result.classes), "input_shape": [int(n) for n in result.input_shape],
             "n_folds": result.n_folds, "n_params": int(result.n_params), "precision": result.precision,
             "train_seconds": float(result.seconds), "best_epochs": [int(e) for e in result.best_epochs]}
    with atomic_dir(directory) as staging:
        for fold, model in enumerate(result.models):
            model.save(staging / fold_model_name(fold))
        np.savez(staging / PREDICTIONS, **{name: getattr(result, name) for name in PREDICTION_ARRAYS})
        result.history.to_parquet(staging / HISTORY, index=False)
        pd.DataFrame({"window_id": result.train_window_ids}).to_parquet(staging / WINDOW_IDS, index=False)
        write_json(staging / MODEL_RECORD, _plain({**record, **facts}))
    return directory


def read_model_record(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a model folder.

    Raises:
        FileNotFoundError: no folder, or a folder without every file of a complete model (the message names it).
    """
    import json

    directory = _complete(Path(directory))
    return json.loads((directory / MODEL_RECORD).read_text())


def read_predictions(directory: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``predictions.npz`` (:data:`PREDICTION_ARRAYS`) and ``train_window_ids`` ``[rows]`` str."""
    directory = _complete(Path(directory))
    with np.load(directory / PREDICTIONS) as saved:
        arrays = {name: saved[name] for name in PREDICTION_ARRAYS}
    arrays["train_window_ids"] = pd.read_parquet(directory / WINDOW_IDS)["window_id"].to_numpy(dtype=str)
    return arrays


def read_history(directory: str | Path) -> pd.DataFrame:
    """``history.parquet``: one row per fold and epoch."""
    return pd.read_parquet(_complete(Path(directory)) / HISTORY)


def fold_model_paths(directory: str | Path) -> list[Path]:
    """``fold_<k>.keras`` of every fold, k = 0..n_folds-1 (FileNotFoundError when the folder is incomplete)."""
    directory = Path(directory)
    return [directory / fold_model_name(k) for k in range(int(read_model_record(directory)["n_folds"]))]


def load_fold_models(directory: str | Path) -> list[keras.Model]:
    """Every fold's model, uncompiled, in fold order (float32 logits ``[batch, classes]``)."""
    import keras

    from birdassets.models.keras.family import register_layers

    register_layers()
    return [keras.saving.load_model(path, compile=False) for path in fold_model_paths(directory)]


def _complete(directory: Path) -> Path:
    """``directory`` when it holds a whole model folder; else FileNotFoundError naming what is missing."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no supervised model folder; train the model first "
                                "(birdassets birdclef train)")
    missing = [name for name in (MODEL_RECORD, PREDICTIONS, HISTORY, WINDOW_IDS) if not (directory / name).is_file()]
    if not missing:
        import json

        n_folds = int(json.loads((directory / MODEL_RECORD).read_text()).get("n_folds", 0))
        missing = [fold_model_name(k) for k in range(n_folds) if not (directory / fold_model_name(k)).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: incomplete supervised model folder, missing {', '.join(missing)}; "
                                "train the model again")
    return directory


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and paths turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
