"""Model assets, per task x checkpoint: ``encoder`` -> ``embeddings`` -> ``probe``.

The encoder is partitioned like the assets it feeds, so one run (``benchmark_job``) carries a new checkpoint
from its encoder to DuckDB for one task; the checkpoint sensor requests one per task."""

import dagster as dg

from birdassets import __version__, steps
from birdassets.defs.automation import EAGER, ON_TASK_DATA
from birdassets.defs.metadata import embeddings_metadata, encoder_metadata, path, table_metadata
from birdassets.defs.partitions import Partitions, split_evaluation_key
from birdassets.defs.profiles import ACCELERATOR_POOL, DUCKDB_POOL
from birdassets.defs.resources import BirdassetsHome

GROUP = "models"


def encoder_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.evaluation, deps=["folds"], code_version=__version__,
              automation_condition=ON_TASK_DATA, pool=DUCKDB_POOL, kinds={"jax", "orbax", "duckdb"})
    def encoder(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The checkpoint's encoder, validated by its family from metadata, then restored; one partition per task
        it is benchmarked on, after the task's data (windows, then folds) is complete."""
        checkpoint = split_evaluation_key(context)[1]
        report = steps.restore_encoder(birdassets.settings, checkpoint)
        return dg.MaterializeResult(metadata=encoder_metadata(report), data_version=dg.DataVersion(checkpoint))

    return encoder


def embeddings_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.evaluation, deps=["mel_dataset", "encoder"],
              code_version=__version__, automation_condition=EAGER, output_required=False, pool=ACCELERATOR_POOL,
              kinds={"jax", "numpy"})
    def embeddings(context: dg.AssetExecutionContext, birdassets: BirdassetsHome):
        """Embeddings ``[windows, dim]`` of every window of the task under the checkpoint's encoder (nothing when
        the encoder reads another frontend preset's windows than the task's)."""
        report = steps.embed(birdassets.settings, *split_evaluation_key(context))
        if report is None:
            context.log.info(f"{context.partition_key}: the encoder reads another frontend preset; nothing to embed")
            return
        yield dg.MaterializeResult(metadata=embeddings_metadata(report))

    return embeddings


def probe_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.evaluation, deps=["embeddings", "folds"],
              code_version=__version__, automation_condition=EAGER, kinds={"jax", "optax"})
    def probe(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Probes (settings.probes) trained per fold on frozen embeddings; out-of-fold and test predictions."""
        report = steps.fit_probes(birdassets.settings, *split_evaluation_key(context))
        return dg.MaterializeResult(metadata={"path": path(report.directory), "probes": table_metadata(report.summary)})

    return probe


def build_encoding_assets(partitions: Partitions) -> list[dg.AssetsDefinition]:
    return [encoder_asset(partitions), embeddings_asset(partitions), probe_asset(partitions)]
