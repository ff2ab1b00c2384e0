"""Supervised BirdCLEF-style models, partitioned by task x model family: ``supervised_model`` (Keras models
trained on every fold, out-of-fold and test predictions, scores) -> ``supervised_scores`` (DuckDB)."""

import dagster as dg

from birdassets import __version__, steps
from birdassets.defs.metadata import record_metadata, supervised_metadata
from birdassets.defs.partitions import Partitions, split_supervised_key
from birdassets.defs.profiles import ACCELERATOR_POOL, DUCKDB_POOL
from birdassets.defs.resources import BirdassetsHome
from birdassets.supervised.config import SEED, build_configs

GROUP = "supervised"


class SupervisedRunConfig(dg.Config):
    """Launchpad config of a supervised training run (the ``birdassets birdclef train`` flags)."""

    debug: bool = False
    epochs: int | None = None
    augment: bool = True
    focal: bool = False
    class_weights: bool = False
    init_checkpoint: str | None = None
    precision: str = "auto"
    batch_size: int = 32
    seed: int = SEED
    rnn_units: int | None = None


def supervised_model_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.supervised, deps=["mel_dataset", "folds"],
              code_version=__version__, pool=ACCELERATOR_POOL, kinds={"keras", "jax"})
    def supervised_model(context: dg.AssetExecutionContext, config: SupervisedRunConfig,
                         birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """One Keras model per fold (selected by validation class-wise AUC), out-of-fold and test predictions
        and their scores, with per-epoch loss and validation AUC of every fold."""
        task, model = split_supervised_key(context)
        try:
            configs = build_configs(model, **config.model_dump())
        except ValueError as error:
            raise dg.Failure(f"supervised_model run config: {error}") from error
        report = steps.train_supervised(birdassets.settings, task, *configs, context.run.run_id, log=context.log.info)
        return dg.MaterializeResult(metadata=supervised_metadata(report))

    return supervised_model


def supervised_scores_asset(partitions: Partitions) -> dg.AssetsDefinition:
    @dg.asset(group_name=GROUP, partitions_def=partitions.supervised, deps=["supervised_model"],
              code_version=__version__, pool=DUCKDB_POOL, kinds={"duckdb"})
    def supervised_scores(context: dg.AssetExecutionContext, birdassets: BirdassetsHome) -> dg.MaterializeResult:
        """The model's scores, per-class scores, lineage (configs, seed, precision) and learning curves,
        recorded in DuckDB in one transaction, beside the probes on the leaderboard."""
        task, model = split_supervised_key(context)
        report = steps.record_supervised(birdassets.settings, task, model, context.run.run_id)
        return dg.MaterializeResult(metadata=record_metadata(report))

    return supervised_scores


def build_supervised_assets(partitions: Partitions) -> list[dg.AssetsDefinition]:
    return [supervised_model_asset(partitions), supervised_scores_asset(partitions)]
