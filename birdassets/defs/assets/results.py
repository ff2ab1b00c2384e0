"""Scoring assets, partitioned by task x checkpoint: ``scores`` (files with lineage) -> ``metrics_db`` (DuckDB)."""

import dagster as dg

from birdassets import __version__, steps
from birdassets.defs.automation import EAGER, REBENCHMARK
from birdassets.defs.metadata import record_metadata, scores_metadata
from birdassets.defs.partitions import Partitions, split_evaluation_key
from birdassets.defs.profiles import DUCKDB_POOL
from birdassets.defs.resources import BirdassetsHome

GROUP = "evaluation"


def scores_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.evaluation, deps=["probe"], code_version=__version__,
              automation_condition=REBENCHMARK, kinds={"python", "parquet"})
    def scores(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """cmAP, class-wise AUC, padded cmAP and top-1 per fold, split and probe, plus per-class AP/AUC."""
        report = steps.score(birdassets.settings, *split_evaluation_key(context), context.run.run_id)
        return dg.MaterializeResult(metadata=scores_metadata(report))

    return scores


def metrics_db_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.evaluation, deps=["scores"], code_version=__version__,
              automation_condition=EAGER, pool=DUCKDB_POOL, kinds={"duckdb"})
    def metrics_db(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The task x checkpoint's scores, per-class scores, lineage, data set, checkpoint and run, recorded
        in DuckDB in one transaction."""
        report = steps.record(birdassets.settings, *split_evaluation_key(context))
        return dg.MaterializeResult(metadata=record_metadata(report))

    return metrics_db


def build_results_assets(partitions: Partitions) -> list[dg.AssetsDefinition]:
    return [scores_asset(partitions), metrics_db_asset(partitions)]
