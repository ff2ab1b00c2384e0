"""Automation: a sensor that registers new finalized checkpoints, the declarative-automation sensor that
carries them through embeddings -> probe -> scores -> DuckDB, and a weekly re-benchmark schedule."""

import dagster as dg

from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME, Partitions, evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.discovery import discover_checkpoints
from birdassets.models.registry import available_pretrained

SENSOR_INTERVAL_S = 30


def build_sensors(partitions: Partitions, encoder_job: dg.JobDefinition, benchmark_job: dg.JobDefinition, settings):
    @dg.sensor(
        job=encoder_job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers new finalized Orbax steps under the checkpoint roots (and installed pretrained "
        "encoders such as BirdNET) and loads their encoders.",
    )
    def checkpoint_sensor(context: dg.SensorEvaluationContext, birdassets: BirdassetsHome) -> dg.SensorResult:
        known = set(context.instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME))
        found = [ref.key for ref in discover_checkpoints(birdassets.settings.checkpoint_roots)]
        found += [key for key in available_pretrained() if key in birdassets.settings.pretrained]
        new = [key for key in found if key not in known]
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=key, run_key=f"encoder:{key}") for key in new],
            dynamic_partitions_requests=[partitions.checkpoint.build_add_request(new)] if new else [],
            cursor=str(len(found)),
        )

    automation = dg.AutomationConditionSensorDefinition(
        "birdassets_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
    )

    @dg.schedule(
        cron_schedule="0 3 * * 0",
        job=benchmark_job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-benchmark every task x checkpoint weekly (an explicit alternative to the scores asset's "
        "weekly automation condition).",
    )
    def weekly_rebenchmark(context: dg.ScheduleEvaluationContext):
        checkpoints = context.instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME)
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
        for checkpoint in checkpoints:
            for task in settings.task_names:
                yield dg.RunRequest(
                    partition_key=evaluation_key(task, checkpoint), run_key=f"rebenchmark:{stamp}:{task}:{checkpoint}"
                )

    return [checkpoint_sensor, automation], [weekly_rebenchmark]
