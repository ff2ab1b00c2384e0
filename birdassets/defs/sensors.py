"""Automation: a sensor that registers new finalized checkpoints and requests one run per task for each (encoder
-> embeddings -> probe -> scores -> DuckDB), a sensor that builds new or reconfigured tasks, the
declarative-automation sensor that carries a (re)built task through every registered checkpoint, and a weekly
re-benchmark schedule."""

import dagster as dg

from birdassets.checkpoints import scan_checkpoints
from birdassets.checkpoints.discovery import AUDIO, input_preset, observed_data
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
"""At most this many new checkpoints registered per tick of the checkpoint sensor; more wait in its cursor for
the next ticks, so 10,000 new steps never flood the run queue in one tick."""
RUNS_PER_TICK = 200
"""At most this many runs requested per tick (one per task and new checkpoint): with 8 tasks, 25 checkpoints a
tick."""


def checkpoints_per_tick(tasks: int) -> int:
    """New checkpoints registered per tick when each needs one run per task (``tasks``)."""
    return max(1, min(CHECKPOINTS_PER_TICK, RUNS_PER_TICK // max(1, tasks)))


def checkpoint_sensor(partitions: Partitions, jobs: dict[str, dg.JobDefinition]) -> dg.SensorDefinition:
    @dg.sensor(jobs=[jobs[BENCHMARK_JOB], jobs[ENCODER_JOB], jobs[SLDS_JOB]],
               minimum_interval_seconds=CHECKPOINT_SENSOR_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Registers new finalized Orbax steps under the checkpoint roots (and installed pretrained "
               "encoders such as BirdNET, and trained supervised models) and requests one benchmark run per task for "
               "each: encoder -> embeddings -> probe -> scores -> DuckDB (a TiDHy step of the SLDS benchmark is "
               "scored on SLDS instead; a model of another preset's windows than every task's only restored and "
               f"listed); at most {CHECKPOINTS_PER_TICK} checkpoints and {RUNS_PER_TICK} runs per "
               "tick. Folders it cannot use are logged and skipped. Its cursor remembers each run folder, so "
               "unchanged runs are not listed again.")
    def checkpoint_sensor(context: dg.SensorEvaluationContext, birdassets: BirdassetsHome) -> dg.SensorResult:
        settings = birdassets.settings
        known = set(context.instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME))
        tick = watch_checkpoints(settings.checkpoint_roots, WatchState.from_json(context.cursor), known,
                                 checkpoints_per_tick(len(settings.task_names)))
        for skipped in tick.skipped:  # one bad folder is reported, never stops the others
            context.log.warning(f"checkpoint folder skipped: {skipped}")
        if tick.state.waiting:
            context.log.info(f"{tick.state.waiting} more new checkpoints wait for the next ticks")
        pretrained = [key for key in available_pretrained() if key in settings.pretrained]
        extra = [key for key in [*pretrained, *supervised_keys(settings.layout.models_root)] if key not in known]
        new = list(dict.fromkeys([*(ref.key for ref in tick.new), *extra]))
        slds = {ref.key for ref in tick.new if observed_data(ref) != AUDIO}
        presets = {ref.key: input_preset(ref) for ref in tick.new}
        ready = [task for task in settings.task_names if task_ready(context.instance, settings, task)] if new else []
        return dg.SensorResult(
            run_requests=[request for key in new for request in checkpoint_runs(
                key, key in slds, ready, tasks_reading(settings, ready, presets.get(key)))],
            dynamic_partitions_requests=[partitions.checkpoint.build_add_request(new)] if new else [],
            cursor=tick.state.to_json(),
        )

    return checkpoint_sensor


def checkpoint_runs(key: str, slds: bool, ready: list[str], reading: list[str]) -> list[dg.RunRequest]:
    """The runs a new checkpoint needs: its SLDS scores (a TiDHy step of the SLDS benchmark); else one benchmark
    run per built task whose windows it reads (``reading``; automation brings a task built later to every
    checkpoint); else, when no built task reads them, its encoder alone on the first built task (restored,
    checked and listed in DuckDB: nothing to embed)."""
    if slds:
        return [dg.RunRequest(partition_key=key, run_key=f"slds:{key}", job_name=SLDS_JOB)]
    if not reading:
        return [dg.RunRequest(partition_key=evaluation_key(task, key), run_key=f"encoder:{task}:{key}",
                              job_name=ENCODER_JOB) for task in ready[:1]]
    return [dg.RunRequest(partition_key=evaluation_key(task, key), run_key=f"benchmark:{task}:{key}",
                          job_name=BENCHMARK_JOB) for task in reading]


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


def tasks_reading(settings: Settings, tasks, preset: str | None) -> list[str]:
    """The ``tasks`` whose mel windows a model of ``preset``'s windows reads (all for ``None``: BirdNET, which
    reads waveforms, or a model naming no preset); a detector of ``orcahello`` windows gets no BirdCLEF task."""
    return [task for task in tasks if preset is None or settings.task_preset(task).name == preset]


def task_ready(instance: dg.DagsterInstance, settings: Settings, task: str) -> bool:
    """Whether ``task`` is built under its current configuration and its last build went through: ``folds``
    materialized after the latest ``raw_audio`` (a blocking check that failed stops the data run before them)."""
    fingerprint, build_id = latest_build(instance, task)
    if fingerprint != settings.task_fingerprint(task):
        return False
    folds = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("folds"), asset_partitions=[task]), limit=1
    ).records
    return bool(folds) and folds[0].storage_id > build_id


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
    sensors = [checkpoint_sensor(partitions, jobs), task_sensor(jobs[DATA_JOB]), automation]
    return sensors, [weekly_rebenchmark(settings, jobs[BENCHMARK_JOB])]
