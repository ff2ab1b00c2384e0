"""The SLDS benchmark's scores as a DuckDB evaluation: rows, lineage and keys of one checkpoint of a run.

Each run trains into its own checkpoint folder, ``tidhy-slds[-small]-seed<seed>``, so the runs of several seeds
sit side by side, and each saved step is its own checkpoint key (``...@<step>``; recording one replaces only its
own rows). Its ``scores`` rows have task ``slds``,
fold 0, split ``test``, probe ``knn`` (``recon_r2``: probe ``decoder``) and the metric names of
:data:`~birdassets.models.tidhy.benchmark.SCORE_NAMES`; ``n_classes_scored`` is the 8 joint states.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from birdassets.lineage import Lineage, code_version, content_hash
from birdassets.models.base import EncoderRef
from birdassets.models.tidhy.benchmark import KNN_NEIGHBOURS, KNN_TRAIN_FRACTION, SCORE_NAMES, BenchmarkConfig
from birdassets.models.tidhy.saved_model import FAMILY_NAME
from birdassets.store import CLASS_SCORE_COLUMNS
from birdassets.store.records import CheckpointRow, DatasetRow, EvaluationRecord, RunRow

SLDS_TASK = "slds"
TIMINGS = ("inference_iterations", "train_seconds", "steps_per_s")
"""Figures of a run kept in the lineage's ``extra`` (the timings only when this call trained)."""
PROBES = {"r2_knn_acc": "knn", "r_knn_acc": "knn", "pca_knn_acc": "knn", "recon_r2": "decoder"}
"""Metric -> the ``probe`` column of its row."""


def run_name(seed: int, small: bool) -> str:
    """``tidhy-slds[-small]-seed<seed>``: the training run of one benchmark run."""
    return f"tidhy-slds{'-small' if small else ''}-seed{seed}"


def score_rows(scores: dict[str, float], n_states: int) -> pd.DataFrame:
    """One ``scores`` row per metric of :data:`SCORE_NAMES` (fold 0, split ``test``)."""
    return pd.DataFrame([{"fold": 0, "split": "test", "probe": PROBES[name], "metric": name,
                          "value": float(scores[name]), "n_classes_scored": n_states} for name in SCORE_NAMES])


def slds_lineage(config: BenchmarkConfig, seed: int, scores: dict[str, float], run_id: str,
                 ref: EncoderRef) -> Lineage:
    """Data = the generator's config and seed; "preset" = the model, inference and learning configs; "folds" =
    the k-NN split; the timings and iteration count in ``extra``."""
    data = {"slds": dataclasses.asdict(config.slds), "seed": seed}
    split = {"neighbours": KNN_NEIGHBOURS, "train_fraction": KNN_TRAIN_FRACTION, "seed": seed}
    return Lineage(
        task=SLDS_TASK, checkpoint=ref.key, step=ref.step,
        manifest_hash=content_hash(data), preset_name="slds-tidhy", preset_hash=content_hash(config),
        folds_hash=content_hash(split), checkpoint_path=str(ref.path), encoder_family=FAMILY_NAME,
        code_version=code_version(), run_id=run_id,
        extra={"benchmark": config.to_dict(), "seed": seed,
               **{name: float(scores[name]) for name in TIMINGS if name in scores}},
    )


def slds_record(config: BenchmarkConfig, seed: int, scores: dict[str, float], run_id: str,
                ref: EncoderRef) -> EvaluationRecord:
    """The whole evaluation of one saved step of a benchmark run (``ref``), for
    :meth:`~birdassets.store.MetricsStore.record_evaluation`."""
    lineage = slds_lineage(config, seed, scores, run_id, ref)
    n_states = 2 ** config.slds.n_systems
    return EvaluationRecord(
        lineage=lineage, scores=score_rows(scores, n_states), class_scores=pd.DataFrame(columns=CLASS_SCORE_COLUMNS),
        dataset=DatasetRow(SLDS_TASK, "slds-generator", "(generated from the seed)", lineage.manifest_hash, 2,
                           n_states),
        checkpoint=CheckpointRow(ref.key, ref.run, ref.step, str(ref.path), FAMILY_NAME),
        run=RunRow(run_id, "tidhy-benchmark", f"SLDS benchmark, seed {seed}, step {ref.step}"),
    )

