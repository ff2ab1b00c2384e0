"""TiDHy's own task: the SLDS benchmark (``slds_benchmark``, per seed) and the SLDS scores of every saved step of
its runs (``slds_scores``, per checkpoint: the checkpoint sensor launches it for each new step that observes
SLDS data, as it launches ``encoder`` for steps that observe audio)."""

import dagster as dg

from birdassets import __version__, steps
from birdassets.defs.metadata import path
from birdassets.defs.partitions import Partitions
from birdassets.defs.profiles import ACCELERATOR_POOL, DUCKDB_POOL
from birdassets.defs.resources import BirdassetsHome

GROUP = "tidhy"
SLDS_SEEDS = ("0", "1", "2")
"""The benchmark's seeds (the issue's mean ± std over 3 seeds)."""


class SLDSRunConfig(dg.Config):
    """``small``: the CI-sized run (150 training steps on 4000 data steps) instead of the full one."""

    small: bool = False


def slds_metadata(report: steps.SLDSReport) -> dict:
    return {"checkpoint": report.checkpoint, "database": path(report.db_path),
            **{name: float(value) for name, value in report.scores.items()}}


def slds_benchmark_asset() -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=dg.StaticPartitionsDefinition(list(SLDS_SEEDS)),
              code_version=__version__, pool=ACCELERATOR_POOL, kinds={"jax", "duckdb"})
    def slds_benchmark(context: dg.AssetExecutionContext, config: SLDSRunConfig,
                       birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """Generate the SLDS data of this seed, train TiDHy (Orbax checkpoints under the first checkpoint root),
        decode the 8 joint states from r2, r and a PCA baseline; scores to DuckDB under task ``slds``."""
        report = steps.slds_benchmark(birdassets.settings, int(context.partition_key), config.small, context.run_id)
        return dg.MaterializeResult(metadata=slds_metadata(report))

    return slds_benchmark


def slds_scores_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.checkpoint, code_version=__version__,
              output_required=False, pool=DUCKDB_POOL, kinds={"jax", "duckdb"})
    def slds_scores(context: dg.AssetExecutionContext, birdassets: BirdassetsHome):
        """SLDS scores of one saved step of a benchmark run (other checkpoints: nothing to materialize)."""
        report = steps.score_slds_checkpoint(birdassets.settings, context.partition_key, context.run_id)
        if report is None:
            context.log.info(f"{context.partition_key} is not a run of the SLDS benchmark: nothing to score")
            return
        yield dg.MaterializeResult(metadata=slds_metadata(report))

    return slds_scores


def build_tidhy_assets(partitions: Partitions) -> list[dg.AssetsDefinition]:
    return [slds_benchmark_asset(), slds_scores_asset(partitions)]
