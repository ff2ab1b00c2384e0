"""The records a write hands to the metrics store, one frozen dataclass per table row or evaluation.

An :class:`EvaluationRecord` is everything one (task, checkpoint) evaluation puts into the
database: its ``datasets``, ``checkpoints`` and ``runs`` rows, its ``lineage`` row and its
``scores``/``class_scores`` rows. :meth:`birdassets.store.MetricsStore.record_evaluation` writes
it in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from birdassets.lineage import Lineage


@dataclass(frozen=True)
class DatasetRow:
    """The ``datasets`` row of a task.

    ``source``: the reader that ingested it (e.g. ``"birdset"``); ``root``: its data folder;
    ``manifest_hash``: content hash of its manifest; ``n_recordings``/``n_classes``: counts >= 0.
    """

    task: str
    source: str
    root: str | Path
    manifest_hash: str
    n_recordings: int
    n_classes: int


@dataclass(frozen=True)
class CheckpointRow:
    """The ``checkpoints`` row of an encoder checkpoint.

    ``checkpoint``: its key (e.g. ``"demo-vit@200"``); ``run``: the training run it belongs to;
    ``step``: its training step (None for encoders without steps); ``path``: where it lives;
    ``family``: its encoder family (e.g. ``"vit"``).
    """

    checkpoint: str
    run: str
    step: int | None
    path: str | Path
    family: str


@dataclass(frozen=True)
class RunRow:
    """The ``runs`` row of a pipeline run: ``kind`` (e.g. ``"benchmark"``) and a free-text ``note``."""

    run_id: str
    kind: str
    note: str = ""


@dataclass(frozen=True, eq=False)
class EvaluationRecord:
    """One (task, checkpoint) evaluation, whole (compared by identity: it holds DataFrames).

    ``scores``: one row per (fold, split, probe, metric), columns
    :data:`birdassets.store.SCORE_COLUMNS`; ``class_scores``: one row per (fold, split, probe,
    class_name), columns :data:`birdassets.store.CLASS_SCORE_COLUMNS` (+ optional
    ``n_negatives``). ``dataset.task``, ``checkpoint.checkpoint`` and ``run.run_id`` must equal the
    lineage's ``task``, ``checkpoint`` and ``run_id``.
    """

    lineage: Lineage
    scores: pd.DataFrame
    class_scores: pd.DataFrame
    dataset: DatasetRow
    checkpoint: CheckpointRow
    run: RunRow
