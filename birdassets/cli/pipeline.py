"""``birdassets benchmark``, and what it shares with ``birdassets demo`` (:mod:`birdassets.cli.demo`): running
jobs in this process, registering checkpoints, benchmarking one, printing the leaderboard.

* ``birdassets benchmark [--task T ...] [--checkpoint C ...]``: run the chain (data, encoder, embeddings, probes,
  scores, DuckDB) through Dagster for configured tasks and checkpoints, print their leaderboard rows.
(``birdassets ui`` is :mod:`birdassets.cli.ui`.)

Both commands use the instance of the profile ``BIRDASSETS_PROFILE`` (default ``local``): its ``dagster.yaml``,
shipped inside the package, is installed as ``$BIRDASSETS_HOME/dagster/dagster.yaml`` (:mod:`birdassets.defs.profiles`).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from birdassets.cli.errors import UserError
from birdassets.defs.profiles import prepare_instance

LEADERBOARD_SQL = (
    "select task, checkpoint, probe, round(mean, 4) as cmap, round(std, 4) as std, n_folds "
    "from leaderboard where split = 'valid' and metric = 'cmAP' and list_contains(?, task) "
    "and (? or list_contains(?, checkpoint)) order by task, step, checkpoint, probe"
)
"""The leaderboard printed after a run: cmAP on validation folds of some tasks (and, optionally, checkpoints)."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``benchmark``."""
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
    the caller's). One process of this home registers at a time (the demo's two lanes both do)."""
    with registering(settings.layout.dagster_home):
        return _register_checkpoints(defs, instance, settings)


@contextlib.contextmanager
def registering(dagster_home: Path) -> Iterator[None]:
    """Hold ``dagster_home/register.lock`` (an exclusive ``flock``, released when the process ends)."""
    import fcntl

    dagster_home.mkdir(parents=True, exist_ok=True)
    with open(dagster_home / "register.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _register_checkpoints(defs, instance, settings) -> list[str]:
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

