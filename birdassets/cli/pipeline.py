"""Commands that run the pipeline through Dagster, and the Dagster instance they share.

* ``birdassets demo``: generate the demo data, train the demo encoder, materialize every asset for every demo
  task on the persistent instance under ``BIRDASSETS_HOME`` (and a supervised RNN per task in debug mode), print
  the leaderboard.
* ``birdassets benchmark [--task T ...] [--checkpoint C ...]``: run the chain (data, encoder, embeddings, probes,
  scores, DuckDB) through Dagster for configured tasks and checkpoints, print their leaderboard rows.
(``birdassets ui`` is :mod:`birdassets.cli.ui`.)

Both use the instance of the profile ``BIRDASSETS_PROFILE`` (default ``local``): its ``dagster.yaml``, shipped inside
the package, is installed as ``$BIRDASSETS_HOME/dagster/dagster.yaml`` (:mod:`birdassets.defs.profiles`).
"""

from __future__ import annotations

import argparse
import os
import time

from birdassets.cli.errors import UserError
from birdassets.defs.profiles import prepare_instance

LEADERBOARD_SQL = (
    "select task, checkpoint, probe, round(mean, 4) as cmap, round(std, 4) as std, n_folds "
    "from leaderboard where split = 'valid' and metric = 'cmAP' and list_contains(?, task) "
    "and (? or list_contains(?, checkpoint)) order by task, step, checkpoint, probe"
)
"""The leaderboard printed after a run: cmAP on validation folds of some tasks (and, optionally, checkpoints)."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` and ``benchmark``."""
    demo = commands.add_parser("demo", help="generate the demo data and run the whole benchmark through Dagster")
    demo.set_defaults(func=cmd_demo)

    benchmark = commands.add_parser(
        "benchmark", help="run the benchmark through Dagster for configured tasks and print their leaderboard rows"
    )
    benchmark.add_argument("--task", action="append", dest="tasks", metavar="TASK",
                           help="a configured task (repeat for several; default: every benchmark task)")
    benchmark.add_argument("--checkpoint", action="append", dest="checkpoints", metavar="CHECKPOINT",
                           help="'<run>@<step>' under a checkpoint root, or a pretrained encoder such as birdnet-v2.4 "
                           "(repeat for several; default: every checkpoint found)")
    benchmark.set_defaults(func=cmd_benchmark)


def register_checkpoints(defs, instance, settings) -> list[str]:
    """Tick the checkpoint sensor until it finds nothing new (it registers at most 100 per tick), applying each
    tick as the daemon does: add the new partitions; returns the checkpoint keys it registered (their runs are
    the caller's)."""
    import dagster as dg

    from birdassets.defs.resources import BirdassetsHome

    sensor, cursor, requested = defs.resolve_sensor_def("checkpoint_sensor"), None, []
    while True:
        context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                          resources={"birdassets": BirdassetsHome(home=str(settings.home))})
        result = sensor(context)
        added = [key for request in result.dynamic_partitions_requests for key in request.partition_keys]
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        requested += added
        if not added:
            return requested
        cursor = result.cursor


def run_job(defs, name: str, partition_key, instance, ops_config: dict | None = None) -> float:
    """Execute job ``name`` for one partition in this process on ``instance``; returns its wall time in s.

    ``ops_config``: run config of the job's ops (``{"supervised_model": {"config": {...}}}``).
    A failed run stops the command (exit status 1) with each failed step's message.
    """
    started = time.perf_counter()
    result = defs.resolve_job_def(name).execute_in_process(
        partition_key=partition_key,
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}, "ops": ops_config or {}},
    )
    if not result.success:
        from birdassets.defs.runs import step_failure_messages

        failures = step_failure_messages(result)
        raise SystemExit(f"birdassets: {name} [{partition_key}] failed:\n  " + "\n  ".join(failures or ["(see the Dagster UI)"]))
    return time.perf_counter() - started


def cmd_demo(args: argparse.Namespace) -> int:
    from birdassets.settings import load_settings

    started = time.perf_counter()
    settings = load_settings()
    demo_data = [d for d in settings.datasets if d.source == "demo"]
    demo_tasks = [d.name for d in demo_data if d.benchmark]
    if not demo_tasks:
        raise UserError(f"no demo tasks configured ({settings.config_file} sets include_demo = false)")
    from dagster import DagsterInstance

    from birdassets.definitions import build_definitions

    prepare_instance(settings)
    print(f"BIRDASSETS_HOME={settings.home}")
    generate_demo_data(demo_data)
    defs = build_definitions(settings)
    with DagsterInstance.get() as instance:
        run_demo_jobs(defs, instance, settings, demo_tasks)
    print_leaderboard(settings, demo_tasks)
    print(f"\nbirdassets demo finished in {time.perf_counter() - started:.1f} s. "
          f"Query more with: birdassets query \"select * from leaderboard\"")
    return 0


def generate_demo_data(demo_data) -> None:
    """Write the audio and label tables of each demo data set (:class:`~birdassets.settings.DatasetConfig`)."""
    from birdassets.sources.demo import generate

    for dataset in demo_data:
        t0 = time.perf_counter()
        generate(dataset.name, dataset.root)
        print(f"  demo data {dataset.name:<12} {dataset.root}  ({time.perf_counter() - t0:.1f} s)")


def run_demo_jobs(defs, instance, settings, tasks: list[str]) -> None:
    """Data of each task, the demo training run, then encoder and benchmark of each checkpoint x task."""
    from birdassets.defs.jobs import DEMO_TRAINING, TRAIN_JOB

    build_task_data(defs, instance, settings, tasks, always=True)
    seconds = run_job(defs, TRAIN_JOB, None, instance)  # the job's defaults are the demo's run
    run = DEMO_TRAINING["run"]
    print(f"  trained {run} ({DEMO_TRAINING['objective']}, {DEMO_TRAINING['num_steps']} steps "
          f"on {DEMO_TRAINING['task']})  {seconds:.1f} s")
    new = register_checkpoints(defs, instance, settings)
    for checkpoint in demo_checkpoints(instance, settings, run):
        benchmark_checkpoint(defs, instance, settings, checkpoint, tasks, new)
    for task in tasks:
        train_demo_model(defs, instance, task)
    train_demo_detector(defs, instance, settings)


def train_demo_detector(defs, instance, settings) -> None:
    """The demo's ResNet18 call detector (:data:`~birdassets.defs.jobs.DEMO_DETECTOR`) trained on ``demo-orca``
    through the train job, its steps registered like any checkpoint, then run over the held-out recordings."""
    import uuid

    from birdassets.defs.jobs import DEMO_DETECTOR, TRAIN_JOB
    from birdassets.steps import detect_demo_recordings

    seconds = run_job(defs, TRAIN_JOB, None, instance, {"train_encoder": {"config": DEMO_DETECTOR}})
    print(f"  trained {DEMO_DETECTOR['run']} (ResNet18 width {DEMO_DETECTOR['width']}, {DEMO_DETECTOR['num_steps']} "
          f"steps on {DEMO_DETECTOR['task']})  {seconds:.1f} s")
    new = register_checkpoints(defs, instance, settings)
    steps = demo_checkpoints(instance, settings, DEMO_DETECTOR["run"], pretrained=False)
    for checkpoint in steps:  # registered; no bird task reads its orcahello windows
        benchmark_checkpoint(defs, instance, settings, checkpoint, list(settings.task_names), new)
    report = detect_demo_recordings(settings, steps[-1], f"demo-{uuid.uuid4()}")
    print_demo_detections(report)


def print_demo_detections(report) -> None:
    """Per-recording decisions of the demo detector against the generator's truth, then the confusion matrix."""
    result, truth, matrix = report.detections.result, report.truth, report.confusion
    print(f"\nCall detection on demo-orca's held-out recordings ({report.detections.scorer}; 2 s windows every "
          f"1 s, P(call) > {result.config.threshold}, >= {result.config.min_num_positive_calls} positive windows):")
    print("recording      calls?  decided  positive windows  global confidence")
    for recording in result.recordings:
        name = os.path.basename(recording.file)
        print(f"{name:<14} {truth[recording.file]:>6d}  {recording.global_prediction:>7d}  "
              f"{int(recording.local_predictions.sum()):>16d}  {recording.global_confidence:>17.3f}")
    precision = "n/a" if matrix.precision is None else f"{matrix.precision:.2f}"
    recall = "n/a" if matrix.recall is None else f"{matrix.recall:.2f}"
    print(f"precision {precision}, recall {recall}\n{matrix.table()}")


def train_demo_model(defs, instance, task: str) -> None:
    """The demo's supervised model of ``task`` (:data:`~birdassets.defs.jobs.DEMO_SUPERVISED`, debug mode),
    trained on every fold and recorded beside the probes."""
    from birdassets.defs.jobs import DEMO_SUPERVISED, SUPERVISED_JOB
    from birdassets.defs.partitions import supervised_key

    model, config = DEMO_SUPERVISED["model"], DEMO_SUPERVISED["config"]
    seconds = run_job(defs, SUPERVISED_JOB, supervised_key(task, model), instance,
                      {"supervised_model": {"config": config}})
    print(f"  materialized supervised_model, supervised_scores  [{task} x {model}, debug]  {seconds:.1f} s")


def build_task_data(defs, instance, settings, tasks: list[str], *, always: bool) -> None:
    """Run the data job (raw_audio, mel_dataset, folds) of each task; unless ``always``, only of tasks not yet
    built under their current configuration (the task sensor's test)."""
    from birdassets.definitions import DATA_JOB
    from birdassets.defs.sensors import built_fingerprint

    for task in tasks:
        if not always and built_fingerprint(instance, task) == settings.task_fingerprint(task):
            print(f"  raw_audio, mel_dataset, folds up to date  [{task}]")
            continue
        seconds = run_job(defs, DATA_JOB, task, instance)
        print(f"  materialized raw_audio, mel_dataset, folds  [{task}]  {seconds:.1f} s")


def demo_checkpoints(instance, settings, run: str, *, pretrained: bool = True) -> list[str]:
    """The registered checkpoints of ``run`` by step, then (``pretrained``) the installed pretrained encoders
    (BirdNET)."""
    from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME

    registered = instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME)
    steps = sorted((k for k in registered if k.startswith(f"{run}@")), key=checkpoint_order)
    return steps + [k for k in registered if pretrained and k in settings.pretrained]


def benchmark_checkpoint(defs, instance, settings, checkpoint: str, tasks: list[str], new: list[str] = ()) -> None:
    """Run the benchmark job of ``checkpoint`` (encoder, embeddings, probes, scores, metrics_db) on each task
    whose windows its encoder reads (as the checkpoint sensor chooses them); its encoder alone when none does."""
    from birdassets.definitions import BENCHMARK_JOB, ENCODER_JOB
    from birdassets.defs.partitions import evaluation_key

    reading = tasks_reading_checkpoint(settings, checkpoint, tasks)
    if tasks and not reading:  # restored, checked and listed in DuckDB; nothing to embed
        seconds = run_job(defs, ENCODER_JOB, evaluation_key(tasks[0], checkpoint), instance)
        print(f"  materialized encoder  [{tasks[0]} x {checkpoint}]{' (new)' if checkpoint in new else ''}  "
              f"{seconds:.1f} s (no task reads its windows)")
    for task in reading:
        seconds = run_job(defs, BENCHMARK_JOB, evaluation_key(task, checkpoint), instance)
        print(f"  materialized encoder, embeddings, probe, scores, metrics_db  [{task} x {checkpoint}]"
              f"{' (new)' if checkpoint in new else ''}  {seconds:.1f} s")


def tasks_reading_checkpoint(settings, checkpoint: str, tasks: list[str]) -> list[str]:
    """The ``tasks`` whose windows ``checkpoint``'s encoder reads: all for a pretrained encoder or a supervised
    model (they name no preset in a checkpoint root), else those of the preset its ``config`` names."""
    from birdassets.checkpoints import CheckpointError, resolve_checkpoint
    from birdassets.checkpoints.discovery import input_preset
    from birdassets.defs.sensors import tasks_reading

    try:
        preset = input_preset(resolve_checkpoint(settings.checkpoint_roots, checkpoint))
    except CheckpointError:
        preset = None
    return tasks_reading(settings, tasks, preset)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from birdassets.settings import load_settings

    started = time.perf_counter()
    settings = load_settings()
    config = settings.config_file or f"the demo defaults ({settings.home} has no birdassets.toml)"
    tasks = chosen(args.tasks, settings.task_names, "task", config)
    roots = ", ".join(str(root) for root in settings.checkpoint_roots)
    checkpoints = chosen(args.checkpoints, findable_checkpoints(settings), "checkpoint", roots)
    from dagster import DagsterInstance

    from birdassets.definitions import build_definitions

    prepare_instance(settings)
    defs = build_definitions(settings)
    with DagsterInstance.get() as instance:
        build_task_data(defs, instance, settings, tasks, always=False)
        new = register_checkpoints(defs, instance, settings)
        for checkpoint in checkpoints:
            benchmark_checkpoint(defs, instance, settings, checkpoint, tasks, new)
    print_leaderboard(settings, tasks, None if args.checkpoints is None else checkpoints)
    print(f"\nbirdassets benchmark finished in {time.perf_counter() - started:.1f} s.")
    return 0


def findable_checkpoints(settings) -> list[str]:
    """What the checkpoint sensor registers: every finalized step under the roots, then the installed
    pretrained encoders that ``settings`` benchmarks, then the trained supervised models (found without loading
    TensorFlow or Dagster)."""
    from birdassets.checkpoints import discover_checkpoints
    from birdassets.models.registry import available_pretrained, supervised_keys

    steps = sorted((ref.key for ref in discover_checkpoints(settings.checkpoint_roots)), key=checkpoint_order)
    pretrained = [key for key in available_pretrained() if key in settings.pretrained]
    return steps + pretrained + supervised_keys(settings.layout.models_root)


def checkpoint_order(key: str) -> tuple:
    """Training runs by name and step (``run@100`` before ``run@1000``), then pretrained encoders."""
    run, at, step = key.rpartition("@")
    return (0, run, int(step)) if at and step.isdigit() else (1, key, 0)


def chosen(asked: list[str] | None, known, what: str, where) -> list[str]:
    """``asked`` (in order, without repeats) when every name is in ``known``, else all of ``known``.

    Raises:
        UserError: a name is not known; the message lists the choices.
    """
    known = list(known)
    unknown = [name for name in asked or [] if name not in known]
    if unknown:
        raise UserError(f"unknown {what} {unknown[0]!r}; known {what}s: {known} (from {where})")
    if not (asked or known):
        raise UserError(f"no {what}s to benchmark (from {where})")
    return list(dict.fromkeys(asked)) if asked else known


def print_leaderboard(settings, tasks: list[str], checkpoints: list[str] | None = None) -> None:
    """Print the leaderboard rows of ``tasks`` (and ``checkpoints``; None: all) as a table: cmAP on validation folds."""
    from birdassets.cli.format import format_frame
    from birdassets.store import query_readonly

    board = query_readonly(settings.layout.db_path, LEADERBOARD_SQL, [tasks, checkpoints is None, checkpoints or []])
    print(f"\nLeaderboard, cmAP on validation folds (mean and std over {settings.n_folds} folds):")
    print(format_frame(board, "table"))

