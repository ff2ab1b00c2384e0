"""Data assets, partitioned by task: ``raw_audio`` (manifest) -> ``mel_dataset`` (TFDS) -> ``folds``."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from birdassets import __version__
from birdassets.benchmark import mel_dataset_for
from birdassets.datasets.mel_tfds import build_mel_dataset
from birdassets.defs.metadata import table_metadata
from birdassets.defs.partitions import Partitions
from birdassets.defs.resources import BirdassetsHome
from birdassets.folds import FoldConfig, assign_folds, fold_table, folds_hash
from birdassets.settings import Settings
from birdassets.sources.ingest import write_quarantine
from birdassets.sources.manifest import Manifest
from birdassets.sources.registry import ingest_source

GROUP = "data"
QUARANTINE_LISTED = 20
"""Quarantined files listed (path, reason, detail) in raw_audio's materialization metadata."""


def presets_version(settings: Settings) -> str:
    """Dagster code version of ``mel_dataset``: changes whenever a configured preset's parameters change,
    which marks the mel datasets (and everything downstream) stale in the UI."""
    hashes = sorted({settings.preset(d.preset).content_hash()[:8] for d in settings.datasets})
    return f"{__version__}-" + "-".join(hashes)


def build_data_assets(settings: Settings, partitions: Partitions) -> list[dg.AssetsDefinition]:
    eager = dg.AutomationCondition.eager()

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.task,
        code_version=__version__,
        automation_condition=eager,
        pool="duckdb",
        kinds={"python", "parquet", "duckdb"},
    )
    def raw_audio(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The task's recordings as a manifest (one row per recording or labelled segment), plus every
        file that could not be used (quarantine: parquet next to the manifest and DuckDB ``quarantine``).
        A bad file is quarantined, never fails the asset; counts reconcile: found = ingested + quarantined."""
        task = context.partition_key
        settings = birdassets.settings
        dataset = settings.dataset(task)
        started = time.perf_counter()
        result = ingest_source(dataset, settings.task_preset(task))
        scan_seconds = time.perf_counter() - started
        manifest = result.manifest
        path = manifest.write(settings.manifest_path(task))
        quarantine_path = write_quarantine(result.quarantine, settings.quarantine_path(task))
        birdassets.store().replace_quarantine(task, result.quarantine, context.run_id)
        if result.quarantine:
            context.log.warning(
                f"{task}: quarantined {len(result.quarantine)} of {result.found} files "
                f"({result.reason_counts()}); see {quarantine_path}"
            )
        table = manifest.table
        counts = table.groupby("split").agg(recordings=("recording_id", "count"), hours=("duration_s", "sum"))
        counts["hours"] = counts["hours"] / 3600
        reasons = pd.DataFrame(
            {"reason": list(result.reason_counts()), "files": list(result.reason_counts().values())}
        )
        first = result.quarantine_frame().head(QUARANTINE_LISTED)[["path", "reason", "detail"]]
        return dg.MaterializeResult(
            metadata={
                "source": dataset.source,
                "root": dg.MetadataValue.path(str(dataset.root)),
                "manifest": dg.MetadataValue.path(str(path)),
                "quarantine": dg.MetadataValue.path(str(quarantine_path)),
                "found": result.found,
                "ingested": result.ingested,
                "quarantined": len(result.quarantine),
                "ignored_non_audio": result.ignored,
                "reconciles": result.reconciles,
                "quarantine_reasons": table_metadata(reasons),
                "quarantined_files": table_metadata(first),
                "recordings": len(table),
                "classes": len(manifest.classes),
                "manifest_hash": manifest.content_hash(),
                "scan_files_per_s": result.found / scan_seconds if scan_seconds else None,
                "seconds": time.perf_counter() - started,
                "by_split": table_metadata(counts.reset_index()),
            },
            data_version=dg.DataVersion(manifest.content_hash()[:16]),
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.task,
        deps=[raw_audio],
        code_version=presets_version(settings),
        automation_condition=eager,
        kinds={"tensorflow", "tfds"},
    )
    def mel_dataset(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Mel-spectrogram windows of every recording, written once as a sharded TFDS dataset + window index."""
        task = context.partition_key
        settings = birdassets.settings
        manifest = Manifest.read(settings.manifest_path(task))
        preset = settings.task_preset(task)
        dataset = build_mel_dataset(manifest, preset, settings.mel_root(task))
        stats = dataset.stats()
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(dataset.builder_dir)),
                "windows": stats["windows"],
                "windows_by_split": dg.MetadataValue.json(stats["windows_by_split"]),
                "audio_seconds": stats["audio_seconds"],
                "mel_throughput_audio_s_per_s": stats["mel_audio_s_per_s"],
                "build_throughput_audio_s_per_s": stats["build_audio_s_per_s"],
                "build_seconds": stats["wall_seconds"],
                "preset": preset.name,
                "preset_hash": preset.content_hash(),
                "shards_per_split": stats["shards_per_split"],
            },
            data_version=dg.DataVersion(dataset.root.name),
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=partitions.task,
        deps=[mel_dataset],
        code_version=__version__,
        automation_condition=eager,
        kinds={"python", "parquet"},
    )
    def folds(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Grouped, multi-label-stratified k-fold assignment of the task's training windows."""
        task = context.partition_key
        settings = birdassets.settings
        windows = mel_dataset_for(settings, task).windows()
        train = windows[windows["split"] == "train"].reset_index(drop=True)
        manifest = Manifest.read(settings.manifest_path(task))
        labels = manifest.label_matrix(train)
        primary_of = dict(zip(manifest.table["recording_id"], manifest.table["primary_label"], strict=True))
        index = {name: i for i, name in enumerate(manifest.classes)}
        primary = np.array([index.get(primary_of[r], -1) for r in train["recording_id"]])
        fold_of = assign_folds(
            train["recording_id"].to_numpy(),
            labels,
            primary,
            FoldConfig(n_folds=settings.n_folds, seed=settings.fold_seed),
        )
        table = fold_table(train["window_id"], train["recording_id"], fold_of)
        path = settings.folds_path(task)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(path)
        per_fold = pd.DataFrame(
            {
                "fold": range(settings.n_folds),
                "windows": np.bincount(fold_of, minlength=settings.n_folds),
                "recordings": table.groupby("fold")["recording_id"].nunique().reindex(range(settings.n_folds)).fillna(0),
            }
        )
        digest = folds_hash(table)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "n_folds": settings.n_folds,
                "seed": settings.fold_seed,
                "folds_hash": digest,
                "per_fold": table_metadata(per_fold),
            },
            data_version=dg.DataVersion(digest[:16]),
        )

    return [raw_audio, mel_dataset, folds]
