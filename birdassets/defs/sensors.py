"""Automation: sensors that register new finalized checkpoints and build new or reconfigured tasks, the
declarative-automation sensor that carries both through embeddings -> probe -> scores -> DuckDB, and a weekly
re-benchmark schedule."""

import dagster as dg

from birdassets.checkpoints import scan_checkpoints
from birdassets.checkpoints.discovery import AUDIO, observed_data
from birdassets.checkpoints.watcher import WatchState, watch_checkpoints
from birdassets.defs.automation import WEEKLY_CRON
from birdassets.defs.jobs import BENCHMARK_JOB, DATA_JOB, ENCODER_JOB, SLDS_JOB
from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME, Partitions, evaluation_key
from birdassets.defs.resources import BirdassetsHome
from birdassets.models.registry import available_pretrained, supervised_keys
from birdassets.settings import Settings

SENSOR_INTERVAL_S = 30
"""Seconds between ticks of the task sensor (it reads the latest build of every task)."""
CHECKPOINT_SENSOR_INTERVAL_S = 5
"""Seconds between ticks of the checkpoint sensor: a quiet tick lists no unchanged run folder (milliseconds at
10,000 steps), so a new step is seen within seconds."""
AUTOMATION_INTERVAL_S = 30
"""Seconds between ticks of declarative automation (a tick takes about 0.5 s at 8,000 task x checkpoint
partitions, ``birdassets bench load``; at 10 s with runs instead of backfills, a score was written twice under
load: kept at Dagster's default until that is understood)."""
CHECKPOINTS_PER_TICK = 100
"""New checkpoints registered (and encoder runs requested) per tick of the checkpoint sensor; more wait in its
cursor for the next ticks, so 10,000 new steps never flood the run queue in one tick."""


def checkpoint_sensor(partitions: Partitions, encoder_job: dg.JobDefinition,
                      slds_job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(jobs=[encoder_job, slds_job], minimum_interval_seconds=CHECKPOINT_SENSOR_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Registers new finalized Orbax steps under the checkpoint roots (and installed pretrained "
               "encoders such as BirdNET, and trained supervised models) and loads their encoders (a TiDHy step of "
               f"the SLDS benchmark is scored on SLDS instead), at most {CHECKPOINTS_PER_TICK} per tick; folders it "
               "cannot use are logged and skipped. Its cursor remembers each run folder, so unchanged runs are not "
               "listed again.")
    def checkpoint_sensor(context: dg.SensorEvaluationContext, birdassets: BirdassetsHome) -> dg.SensorResult:
        settings = birdassets.settings
        known = set(context.instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME))
        tick = watch_checkpoints(settings.checkpoint_roots, WatchState.from_json(context.cursor), known,
                                 CHECKPOINTS_PER_TICK)
        for skipped in tick.skipped:  # one bad folder is reported, never stops the others
            context.log.warning(f"checkpoint folder skipped: {skipped}")
        if tick.state.waiting:
            context.log.info(f"{tick.state.waiting} more new checkpoints wait for the next ticks")
        pretrained = [key for key in available_pretrained() if key in settings.pretrained]
        extra = [key for key in [*pretrained, *supervised_keys(settings.layout.models_root)] if key not in known]
        new = list(dict.fromkeys([*(ref.key for ref in tick.new), *extra]))
        slds = {ref.key for ref in tick.new if observed_data(ref) != AUDIO}
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=key, run_key=f"slds:{key}", job_name=slds_job.name)
                          if key in slds else
                          dg.RunRequest(partition_key=key, run_key=f"encoder:{key}", job_name=encoder_job.name)
                          for key in new],
            dynamic_partitions_requests=[partitions.checkpoint.build_add_request(new)] if new else [],
            cursor=tick.state.to_json(),
        )

    return checkpoint_sensor


def latest_build(instance: dg.DagsterInstance, task: str) -> tuple[str | None, int]:
    """``(task fingerprint, storage id)`` of the latest ``raw_audio`` materialization of ``task`` (``(None, 0)``
    when there is none)."""
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_audio"), asset_partitions=[task]), limit=1
    ).records
    if not latest:
        return None, 0
    entry = latest[0].asset_materialization.metadata.get("task_fingerprint")
    return (entry.value if entry is not None else None), latest[0].storage_id


def built_fingerprint(instance: dg.DagsterInstance, task: str) -> str | None:
    """The task fingerprint the latest ``raw_audio`` materialization of ``task`` was built under."""
    return latest_build(instance, task)[0]


def task_sensor(data_job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(job=data_job, minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Builds raw_audio, mel_dataset and folds of every task that is new in birdassets.toml or "
               "whose source, root or preset parameters changed; automation then scores it on every checkpoint.")
    def task_sensor(context: dg.SensorEvaluationContext, birdassets: BirdassetsHome):
        settings = birdassets.settings
        for task in settings.task_names:
            fingerprint = settings.task_fingerprint(task)
            built, build_id = latest_build(context.instance, task)
            if built != fingerprint:  # one request per configuration and build: no retry loop on failure,
                key = f"data:{task}:{fingerprint}:{build_id}"  # yet A -> B -> A rebuilds under A again
                yield dg.RunRequest(partition_key=task, run_key=key)

    return task_sensor


def audio_checkpoints(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """The registered checkpoint partitions, less the steps that observe no audio (TiDHy on SLDS)."""
    slds = {ref.key for ref in scan_checkpoints(settings.checkpoint_roots).checkpoints
            if observed_data(ref) != AUDIO}
    return [key for key in instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME) if key not in slds]


def weekly_rebenchmark(settings: Settings, benchmark_job: dg.JobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(cron_schedule=WEEKLY_CRON, job=benchmark_job, default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Re-benchmark every task x checkpoint weekly (an explicit alternative to the scores "
                 "asset's weekly automation condition).")
    def weekly_rebenchmark(context: dg.ScheduleEvaluationContext):
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
        for checkpoint in audio_checkpoints(context.instance, settings):
            for task in settings.task_names:
                yield dg.RunRequest(partition_key=evaluation_key(task, checkpoint),
                                    run_key=f"rebenchmark:{stamp}:{task}:{checkpoint}")

    return weekly_rebenchmark


def build_automation(partitions: Partitions, jobs: dict[str, dg.JobDefinition], settings: Settings):
    """``(sensors, schedules)`` of the code location."""
    automation = dg.AutomationConditionSensorDefinition(
        "birdassets_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    )
    sensors = [checkpoint_sensor(partitions, jobs[ENCODER_JOB], jobs[SLDS_JOB]), task_sensor(jobs[DATA_JOB]), automation]
    return sensors, [weekly_rebenchmark(settings, jobs[BENCHMARK_JOB])]
