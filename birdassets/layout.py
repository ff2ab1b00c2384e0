"""Every path under ``BIRDASSETS_HOME``, in one place.

::

    $BIRDASSETS_HOME/
      birdassets.toml                   data sets, checkpoint roots, probes (birdassets.settings)
      dagster/                          the Dagster instance (DAGSTER_HOME)
      data/<task>/                      generated demo audio (other sources point elsewhere)
      manifests/<task>.parquet          one row per recording (+ <task>.quarantine.parquet)
      mel/<task>/<preset>-<fp>/         TFDS mel dataset + window index
      folds/<task>.parquet              window -> validation fold
      checkpoints/<run>/<step>/         Orbax checkpoints (the demo's; users add their own roots)
      encoders/<checkpoint>.json        what the encoder asset restored
      embeddings/<task>/<checkpoint>/   arrays + window ids
      probes/<task>/<checkpoint>/       probe predictions and parameters
      scores/<task>/<checkpoint>/       score tables + lineage before they enter DuckDB
      detections/<task>/                JSON and CSV exports of the detections asset
      models/<task>/<model>/            supervised Keras models: fold_<k>.keras, model.json, predictions, history
      birdassets.duckdb                 scores, per-class scores, lineage

Steps read and write only through a :class:`Layout`; partition keys become single path components
(:func:`safe_name`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "birdassets.toml"
DATABASE_FILE = "birdassets.duckdb"


def safe_name(key: str) -> str:
    """A partition key as a single path component (``/`` and others replaced; ``@`` kept readable)."""
    return re.sub(r"[^A-Za-z0-9_.@\-]", "_", key)


@dataclass(frozen=True)
class Layout:
    """Where each artifact of a task or task x checkpoint lives under ``home``."""

    home: Path

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def db_path(self) -> Path:
        return self.home / DATABASE_FILE

    @property
    def compile_cache(self) -> Path:
        """JAX's persistent compilation cache (:mod:`birdassets.compile_cache`); safe to delete."""
        return self.home / "cache" / "jax"

    @property
    def checkpoints_root(self) -> Path:
        """The first checkpoint root: where the demo and ``train_job`` write their runs."""
        return self.home / "checkpoints"

    def demo_data(self, task: str) -> Path:
        return self.home / "data" / task

    def manifest_path(self, task: str) -> Path:
        return self.home / "manifests" / f"{task}.parquet"

    def quarantine_path(self, task: str) -> Path:
        """The task's quarantined files (parquet), next to its manifest."""
        return self.home / "manifests" / f"{task}.quarantine.parquet"

    def mel_root(self, task: str) -> Path:
        return self.home / "mel" / task

    def folds_path(self, task: str) -> Path:
        return self.home / "folds" / f"{task}.parquet"

    def encoder_path(self, checkpoint: str) -> Path:
        return self.home / "encoders" / f"{safe_name(checkpoint)}.json"

    def embeddings_dir(self, task: str, checkpoint: str) -> Path:
        return self.home / "embeddings" / task / safe_name(checkpoint)

    def probes_dir(self, task: str, checkpoint: str) -> Path:
        return self.home / "probes" / task / safe_name(checkpoint)

    def scores_dir(self, task: str, checkpoint: str) -> Path:
        return self.home / "scores" / task / safe_name(checkpoint)

    def detections_dir(self, task: str) -> Path:
        return self.home / "detections" / task

    @property
    def models_root(self) -> Path:
        """Where supervised Keras models live (``models/<task>/<model>/``)."""
        return self.home / "models"

    def models_dir(self, task: str, model: str) -> Path:
        """A supervised model family trained on ``task``: one ``.keras`` file per fold and its records."""
        return self.models_root / task / safe_name(model)
