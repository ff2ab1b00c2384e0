"""Data assets, partitioned by task: ``raw_audio`` (manifest + quarantine) -> ``mel_dataset`` (TFDS) -> ``folds``.

A task that is new or reconfigured (source, root, preset parameters) is built by the ``task_sensor``
(:mod:`birdassets.defs.sensors`), which runs these three for it; what follows them is automated eagerly.
"""

import dagster as dg

from birdassets import __version__, steps
from birdassets.defs.automation import EAGER
from birdassets.defs.metadata import folds_metadata, ingest_metadata, mel_metadata
from birdassets.defs.partitions import Partitions
from birdassets.defs.profiles import DUCKDB_POOL
from birdassets.defs.resources import BirdassetsHome
from birdassets.settings import Settings

GROUP = "data"


def presets_version(settings: Settings) -> str:
    """Dagster code version of ``mel_dataset``: changes whenever a configured preset's parameters change,
    which marks the mel datasets (and everything downstream) stale in the UI."""
    hashes = sorted({settings.preset(d.preset).content_hash()[:8] for d in settings.datasets})
    return f"{__version__}-" + "-".join(hashes)


def raw_audio_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.task, code_version=__version__, pool=DUCKDB_POOL,
              kinds={"python", "parquet", "duckdb"})
    def raw_audio(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The task's recordings as a manifest (one row per recording or labelled segment), plus every
        file that could not be used (quarantine: parquet next to the manifest and DuckDB ``quarantine``).
        A bad file is quarantined, never fails the asset; counts reconcile: found = ingested + quarantined."""
        report = steps.ingest(birdassets.settings, context.partition_key, context.run_id)
        quarantine = report.result.quarantine
        if quarantine:
            context.log.warning(f"{report.task}: quarantined {len(quarantine)} of {report.result.found} files "
                                f"({report.result.reason_counts()}); see {report.quarantine_path}")
        return dg.MaterializeResult(metadata=ingest_metadata(report),
                                    data_version=dg.DataVersion(report.result.manifest.content_hash()[:16]))

    return raw_audio


def mel_dataset_asset(partitions: Partitions, settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.task, deps=["raw_audio"],
              code_version=presets_version(settings), automation_condition=EAGER,
              kinds={"tensorflow", "tfds"})
    def mel_dataset(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Mel-spectrogram windows of every recording, written once as a sharded TFDS dataset + window index."""
        report = steps.build_mel(birdassets.settings, context.partition_key)
        return dg.MaterializeResult(metadata=mel_metadata(report), data_version=dg.DataVersion(report.dataset.root.name))

    return mel_dataset


def folds_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.task, deps=["mel_dataset"], code_version=__version__,
              automation_condition=EAGER, kinds={"python", "parquet"})
    def folds(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Grouped, multi-label-stratified k-fold assignment of the task's training windows."""
        report = steps.make_folds(birdassets.settings, context.partition_key)
        return dg.MaterializeResult(metadata=folds_metadata(report),
                                    data_version=dg.DataVersion(report.folds_hash[:16]))

    return folds


def build_task_data_assets(settings: Settings, partitions: Partitions) -> list[dg.AssetsDefinition]:
    return [raw_audio_asset(partitions), mel_dataset_asset(partitions, settings), folds_asset(partitions)]
