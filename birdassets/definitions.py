"""The Dagster code location: ``dagster dev -m birdassets.definitions`` (or ``workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from birdassets.compile_cache import enable_compile_cache
from birdassets.defs.assets.task_data import build_task_data_assets
from birdassets.defs.assets.on_demand import detections_asset
from birdassets.defs.assets.encoding import build_encoding_assets
from birdassets.defs.assets.results import build_results_assets
from birdassets.defs.assets.supervised import build_supervised_assets
from birdassets.defs.assets.tidhy import build_tidhy_assets
from birdassets.defs.checks import build_checks
from birdassets.defs.executors import executor_for
from birdassets.defs.jobs import (  # noqa: F401
    BENCHMARK_JOB, DATA_JOB, DETECT_JOB, ENCODER_JOB, SUPERVISED_JOB, build_jobs, train_job,
)
from birdassets.defs.partitions import build_partitions
from birdassets.defs.resources import BirdassetsHome
from birdassets.defs.sensors import build_automation
from birdassets.settings import Settings, load_settings

def build_definitions(settings: Settings) -> dg.Definitions:
    """All assets, checks, jobs, sensors and the schedule for the data sets configured in ``settings``."""
    enable_compile_cache(settings.layout.compile_cache)  # every Dagster process builds these first
    partitions = build_partitions(settings)
    assets = [*build_task_data_assets(settings, partitions), *build_encoding_assets(partitions),
              *build_results_assets(partitions), detections_asset(partitions), *build_supervised_assets(partitions),
              *build_tidhy_assets(partitions)]
    jobs = build_jobs(partitions)
    sensors, schedules = build_automation(partitions, jobs, settings)
    return dg.Definitions(
        assets=assets,
        asset_checks=build_checks({a.key.to_user_string(): a for a in assets}),
        jobs=[*jobs.values(), train_job],
        sensors=sensors,
        schedules=schedules,
        resources={"birdassets": BirdassetsHome(home=str(settings.home))},
        executor=executor_for(settings.execution),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
