"""The SLDS benchmark's scores as a DuckDB evaluation: rows, lineage and keys of one ``(config, seed)`` run.

Each run is its own checkpoint key, ``tidhy-slds[-small]-seed<seed>@<train_steps>``, so the runs of several
seeds sit side by side (recording one replaces only its own rows). Its ``scores`` rows have task ``slds``,
fold 0, split ``test``, probe ``knn`` (``recon_r2``: probe ``decoder``) and the metric names of
:data:`~birdassets.models.tidhy.benchmark.SCORE_NAMES`; ``n_classes_scored`` is the 8 joint states.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from birdassets.lineage import Lineage, code_version, content_hash
from birdassets.models.tidhy.benchmark import KNN_NEIGHBOURS, KNN_TRAIN_FRACTION, SCORE_NAMES, BenchmarkConfig
from birdassets.store import CLASS_SCORE_COLUMNS
from birdassets.store.records import CheckpointRow, DatasetRow, EvaluationRecord, RunRow

SLDS_TASK = "slds"
FAMILY_NAME = "tidhy"
PROBES = {"r2_knn_acc": "knn", "r_knn_acc": "knn", "pca_knn_acc": "knn", "recon_r2": "decoder"}
"""Metric -> the ``probe`` column of its row."""


def run_name(seed: int, small: bool) -> str:
    """``tidhy-slds[-small]-seed<seed>``: the training run of one benchmark run."""
    return f"tidhy-slds{'-small' if small else ''}-seed{seed}"


def checkpoint_key(config: BenchmarkConfig, seed: int, small: bool) -> str:
    """``<run_name>@<train_steps>``."""
    return f"{run_name(seed, small)}@{config.train_steps}"


def score_rows(scores: dict[str, float], n_states: int) -> pd.DataFrame:
    """One ``scores`` row per metric of :data:`SCORE_NAMES` (fold 0, split ``test``)."""
    return pd.DataFrame([{"fold": 0, "split": "test", "probe": PROBES[name], "metric": name,
                          "value": float(scores[name]), "n_classes_scored": n_states} for name in SCORE_NAMES])


def slds_lineage(config: BenchmarkConfig, seed: int, small: bool, scores: dict[str, float], run_id: str,
                 checkpoint_path: str) -> Lineage:
    """Data = the generator's config and seed; "preset" = the model, inference and learning configs; "folds" =
    the k-NN split; the timings and iteration count in ``extra``."""
    data = {"slds": dataclasses.asdict(config.slds), "seed": seed}
    split = {"neighbours": KNN_NEIGHBOURS, "train_fraction": KNN_TRAIN_FRACTION, "seed": seed}
    return Lineage(
        task=SLDS_TASK, checkpoint=checkpoint_key(config, seed, small), step=config.train_steps,
        manifest_hash=content_hash(data), preset_name="slds-tidhy", preset_hash=content_hash(config),
        folds_hash=content_hash(split), checkpoint_path=checkpoint_path, encoder_family=FAMILY_NAME,
        code_version=code_version(), run_id=run_id,
        extra={"benchmark": dataclasses.asdict(config), "seed": seed, "small": small,
               **{name: float(scores[name]) for name in ("inference_iterations", "train_seconds", "steps_per_s")}},
    )


def slds_record(config: BenchmarkConfig, seed: int, small: bool, scores: dict[str, float], run_id: str,
                checkpoint_path: str) -> EvaluationRecord:
    """The whole evaluation of one benchmark run, for :meth:`~birdassets.store.MetricsStore.record_evaluation`."""
    lineage = slds_lineage(config, seed, small, scores, run_id, checkpoint_path)
    n_states = 2 ** config.slds.n_systems
    return EvaluationRecord(
        lineage=lineage, scores=score_rows(scores, n_states), class_scores=pd.DataFrame(columns=CLASS_SCORE_COLUMNS),
        dataset=DatasetRow(SLDS_TASK, "slds-generator", "(generated from the seed)", lineage.manifest_hash, 2,
                           n_states),
        checkpoint=CheckpointRow(lineage.checkpoint, run_name(seed, small), config.train_steps,
                                 checkpoint_path, FAMILY_NAME),
        run=RunRow(run_id, "tidhy-benchmark", f"SLDS benchmark, seed {seed}{' (small)' if small else ''}"),
    )

