"""The Dagster code location: ``dagster dev -m birdassets.definitions`` (or ``workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from birdassets.defs.assets.data import build_data_assets
from birdassets.defs.assets.detection import build_detection_assets
from birdassets.defs.assets.evaluation import build_evaluation_assets
from birdassets.defs.assets.models import build_model_assets
from birdassets.defs.checks import build_checks
from birdassets.defs.partitions import build_partitions
from birdassets.defs.resources import BirdassetsHome
from birdassets.defs.sensors import build_sensors
from birdassets.defs.training import train_job
from birdassets.settings import Settings, load_settings

DATA_JOB = "data_job"
ENCODER_JOB = "encoder_job"
BENCHMARK_JOB = "benchmark_job"
DETECT_JOB = "detect_job"


def build_definitions(settings: Settings) -> dg.Definitions:
    """All assets, checks, jobs, sensors and the schedule for the data sets configured in ``settings``."""
    partitions = build_partitions(settings)
    data = build_data_assets(settings, partitions)
    models = build_model_assets(settings, partitions, data)
    evaluation = build_evaluation_assets(settings, partitions, models)
    detection = build_detection_assets(partitions, data)
    assets = data + models + evaluation + detection
    by_name = {a.key.to_user_string(): a for a in assets}
    data_job = dg.define_asset_job(DATA_JOB, selection=dg.AssetSelection.assets(*data), partitions_def=partitions.task)
    encoder_job = dg.define_asset_job(
        ENCODER_JOB, selection=dg.AssetSelection.assets(by_name["encoder"]), partitions_def=partitions.checkpoint
    )
    benchmark_job = dg.define_asset_job(
        BENCHMARK_JOB,
        selection=dg.AssetSelection.assets(by_name["embeddings"], by_name["probe"], *evaluation),
        partitions_def=partitions.evaluation,
    )
    detect_job = dg.define_asset_job(
        DETECT_JOB, selection=dg.AssetSelection.assets(*detection), partitions_def=partitions.task
    )
    sensors, schedules = build_sensors(partitions, encoder_job, benchmark_job, settings)
    return dg.Definitions(
        assets=assets,
        asset_checks=build_checks(by_name),
        jobs=[data_job, encoder_job, benchmark_job, detect_job, train_job],
        sensors=sensors,
        schedules=schedules,
        resources={"birdassets": BirdassetsHome(home=str(settings.home))},
        # One process per run: steps share the TensorFlow/JAX import and compiled functions instead of
        # spawning a fresh interpreter per step (seconds each), and a GPU is held by a single process.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
