"""``birdassets demo``: generate the demo data, train the demo encoder, materialize every asset for every demo task
on the persistent instance under ``BIRDASSETS_HOME`` (and a supervised RNN per task in debug mode), train the demo's
call detector and run it over held-out recordings, print the detections and the leaderboard.

The demo runs in two lanes: this process does the bird tasks' data and the demo training run, a second one
(:func:`second_lane`) the call detector on ``demo-orca``, then the bird tasks' supervised models once their data is
built. Then both take the bird tasks' benchmark runs (:class:`SharedBenchmarks`, longest first) until none is
left, so they finish together. They share nothing else but the instance and the metrics database, and each keeps
only about 1.2 of 2 cores busy (audio decoding, small convolutions, Python between steps), so side by side they
finish sooner. The second lane's printout goes to a file and is printed after the first lane's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from birdassets.atomic import write_json
from birdassets.cli.errors import UserError
from birdassets.cli.pipeline import (
    benchmark_checkpoint,
    build_task_data,
    checkpoint_order,
    print_leaderboard,
    register_checkpoints,
    run_job,
    tasks_reading_checkpoint,
)
from birdassets.defs.profiles import configured_accelerators, prepare_instance, visible_gpus

DEMO_LANES = 2
"""The demo's processes: the bird tasks' benchmark (this one) and :func:`second_lane`."""

TASK_DATA_WAIT_S = 600.0
"""How long the second lane waits for a bird task's data before it gives up (the first lane builds it first)."""

POLL_S = 1.0
"""How often the second lane looks for the first lane's data and benchmark runs, seconds."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    demo = commands.add_parser("demo", help="generate the demo data and run the whole benchmark through Dagster")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from birdassets.settings import load_settings

    started = time.perf_counter()
    settings = load_settings()
    demo_data = [d for d in settings.datasets if d.source == "demo"]
    demo_tasks = [d.name for d in demo_data if d.benchmark]
    if not demo_tasks:
        raise UserError(f"no demo tasks configured ({settings.config_file} sets include_demo = false)")
    prepare_instance(settings, accelerators=demo_accelerator_slots())
    print(f"BIRDASSETS_HOME={settings.home}", flush=True)
    with SecondLane(demo_tasks) as second:  # started first: both lanes import TensorFlow and JAX (7 s) at once
        from dagster import DagsterInstance

        from birdassets.definitions import build_definitions
        from birdassets.defs.jobs import DEMO_DETECTOR

        generate_demo_data([d for d in demo_data if d.name != DEMO_DETECTOR["task"]])
        defs = build_definitions(settings)
        with DagsterInstance.get() as instance:
            run_demo_jobs(defs, instance, settings, demo_tasks, second.benchmarks)
        second.finish()
    print_leaderboard(settings, demo_tasks)
    print(f"\nbirdassets demo finished in {time.perf_counter() - started:.1f} s. "
          f"Query more with: birdassets query \"select * from leaderboard\"")
    return 0


def demo_accelerator_slots() -> int:
    """The ``accelerator`` pool during the demo: ``$BIRDASSETS_ACCELERATORS``, else the GPUs, else one slot per lane
    (without a GPU the pool guards only the CPU, which neither lane keeps busy on its own)."""
    return configured_accelerators() or visible_gpus() or DEMO_LANES


class SecondLane:
    """:func:`second_lane` of ``tasks`` in a second process while the ``with`` block runs; :meth:`finish` waits
    for it and prints what it printed. Leaving the block early (an error here) stops it."""

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = tasks

    def __enter__(self) -> SecondLane:
        import multiprocessing

        self.folder = Path(tempfile.mkdtemp(prefix="birdassets-demo-lanes-"))
        self.log = self.folder / "second-lane.log"
        self.benchmarks = SharedBenchmarks(self.folder / "benchmarks")
        self.process = multiprocessing.get_context("spawn").Process(
            target=second_lane_process, args=(str(self.log), self.tasks, str(self.benchmarks.folder), os.getpid()),
            name="birdassets-demo-second-lane", daemon=True)
        self.process.start()
        return self

    def finish(self) -> None:
        """Wait for the lane, print its output; a failed lane stops the demo (its error is already on stderr)."""
        self.process.join()
        print(self.log.read_text(encoding="utf-8"), end="", flush=True)
        if self.process.exitcode != 0:
            raise SystemExit(f"birdassets: the demo's second lane (call detector, supervised models, shared "
                             f"benchmark runs) failed (exit status {self.process.exitcode})")

    def __exit__(self, *exc_info) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class BenchmarkRun:
    """One benchmark of the demo: ``checkpoint`` on ``tasks`` (one task whose windows its encoder reads, or all
    of them for an encoder no task reads: its encoder alone); ``new``: registered by this demo."""

    checkpoint: str
    tasks: tuple[str, ...]
    new: bool


class SharedBenchmarks:
    """The benchmark runs both lanes take from: the first lane publishes them once its checkpoints are registered,
    then each lane runs the next unclaimed one until none is left. A run is claimed by creating
    ``<folder>/<index>.claimed`` with ``O_EXCL``, which exactly one process wins, so every run happens once."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._runs = self.folder / "runs.json"

    def publish(self, runs: list[BenchmarkRun]) -> None:
        write_json(self._runs, [asdict(run) for run in runs])

    def take(self, run: Callable[[BenchmarkRun], None], *, alive: Callable[[], bool] = lambda: True) -> None:
        """Wait for the published runs (while ``alive()``), then ``run`` each one this process claims, in order."""
        while not self._runs.exists():
            if not alive():
                return
            time.sleep(POLL_S)
        published = json.loads(self._runs.read_text(encoding="utf-8"))
        for index, fields in enumerate(published):
            if self._claim(index):
                run(BenchmarkRun(fields["checkpoint"], tuple(fields["tasks"]), fields["new"]))

    def _claim(self, index: int) -> bool:
        try:
            os.close(os.open(self.folder / f"{index}.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


def second_lane_process(log: str, tasks: list[str], benchmarks: str, parent: int) -> None:
    """:func:`second_lane`, then leave at once: its instance is closed and its output flushed, and a normal
    interpreter exit would spend 1.5-2.5 s tearing TensorFlow and JAX down while the first lane waits for it."""
    second_lane(log, tasks, benchmarks, parent)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def second_lane(log: str, tasks: list[str], benchmarks: str, parent: int) -> None:
    """The demo's call detector and supervised models, in a process of its own with its standard output going to
    the file ``log``: ``demo-orca``'s data, the ResNet18 trained through the train job, its steps registered and
    benchmarked; the supervised model of each of ``tasks`` once the first lane has built its data; then the bird
    tasks' benchmark runs that the first lane (process ``parent``) has not taken (:class:`SharedBenchmarks` in the
    folder ``benchmarks``); then the detections."""
    from dagster import DagsterInstance

    from birdassets.cli import quiet
    from birdassets.definitions import build_definitions
    from birdassets.defs.jobs import DEMO_DETECTOR
    from birdassets.settings import load_settings

    with open(log, "w", encoding="utf-8") as out:
        sys.stdout.flush()
        os.dup2(out.fileno(), sys.stdout.fileno())
    quiet()
    settings = load_settings()
    generate_demo_data([d for d in settings.datasets if d.source == "demo" and d.name == DEMO_DETECTOR["task"]])
    defs = build_definitions(settings)
    with DagsterInstance.get() as instance:
        report = train_demo_detector(defs, instance, settings)
        for task in tasks:
            wait_for_task_data(instance, settings, task)
            train_demo_model(defs, instance, task)
        SharedBenchmarks(benchmarks).take(lambda run: run_benchmark(defs, instance, settings, run),
                                          alive=lambda: os.getppid() == parent)
    print_demo_detections(report)


def wait_for_task_data(instance, settings, task: str) -> None:
    """Return once ``task``'s data is built under its configuration (:func:`~birdassets.defs.sensors.task_ready`).

    Raises:
        SystemExit: not within :data:`TASK_DATA_WAIT_S`.
    """
    from birdassets.defs.sensors import task_ready

    deadline = time.monotonic() + TASK_DATA_WAIT_S
    while not task_ready(instance, settings, task):
        if time.monotonic() > deadline:
            raise SystemExit(f"birdassets: {task}'s data was not built within {TASK_DATA_WAIT_S:g} s")
        time.sleep(POLL_S)


def generate_demo_data(demo_data) -> None:
    """Write the audio and label tables of each demo data set (:class:`~birdassets.settings.DatasetConfig`)."""
    from birdassets.sources.demo import generate

    for dataset in demo_data:
        t0 = time.perf_counter()
        generate(dataset.name, dataset.root)
        print(f"  demo data {dataset.name:<12} {dataset.root}  ({time.perf_counter() - t0:.1f} s)", flush=True)


def run_demo_jobs(defs, instance, settings, tasks: list[str], benchmarks: SharedBenchmarks) -> None:
    """Data of each task, the demo training run, then encoder and benchmark of each checkpoint x task, shared
    with the second lane."""
    from birdassets.defs.jobs import DEMO_TRAINING, TRAIN_JOB

    build_task_data(defs, instance, settings, tasks, always=True)
    seconds = run_job(defs, TRAIN_JOB, None, instance)  # the job's defaults are the demo's run
    run = DEMO_TRAINING["run"]
    print(f"  trained {run} ({DEMO_TRAINING['objective']}, {DEMO_TRAINING['num_steps']} steps "
          f"on {DEMO_TRAINING['task']})  {seconds:.1f} s")
    new = register_checkpoints(defs, instance, settings)
    benchmarks.publish(benchmark_runs(settings, demo_checkpoints(instance, settings, run), tasks, new))
    benchmarks.take(lambda benchmark: run_benchmark(defs, instance, settings, benchmark))


def benchmark_runs(settings, checkpoints: list[str], tasks: list[str], new: list[str]) -> list[BenchmarkRun]:
    """The benchmark of each of ``checkpoints`` on each task whose windows it reads (all of ``tasks`` at once when
    none does), longest first: the pretrained encoders' (BirdNET embeds 48 kHz audio: 5-8x a demo step's run),
    then the trained steps in order, so that what is left at the end is short and the lanes finish close
    together."""
    runs = []
    for checkpoint in sorted(checkpoints, key=lambda key: key not in settings.pretrained):  # stable
        reading = tasks_reading_checkpoint(settings, checkpoint, tasks)
        groups = [(task,) for task in reading] or [tuple(tasks)]
        runs += [BenchmarkRun(checkpoint, group, checkpoint in new) for group in groups]
    return runs


def run_benchmark(defs, instance, settings, run: BenchmarkRun) -> None:
    """:func:`~birdassets.cli.pipeline.benchmark_checkpoint` of one :class:`BenchmarkRun`."""
    benchmark_checkpoint(defs, instance, settings, run.checkpoint, list(run.tasks),
                         [run.checkpoint] if run.new else [])


def train_demo_detector(defs, instance, settings):
    """The demo's ResNet18 call detector (:data:`~birdassets.defs.jobs.DEMO_DETECTOR`) trained on ``demo-orca``
    through the train job, its steps registered like any checkpoint; returns its report on the held-out
    recordings (:func:`~birdassets.steps.detect_demo_recordings`)."""
    import uuid

    from birdassets.defs.jobs import DEMO_DETECTOR, TRAIN_JOB
    from birdassets.steps import detect_demo_recordings

    before = set(demo_checkpoints(instance, settings, DEMO_DETECTOR["run"], pretrained=False))
    seconds = run_job(defs, TRAIN_JOB, None, instance, {"train_encoder": {"config": DEMO_DETECTOR}})
    print(f"  trained {DEMO_DETECTOR['run']} (ResNet18 width {DEMO_DETECTOR['width']}, {DEMO_DETECTOR['num_steps']} "
          f"steps on {DEMO_DETECTOR['task']})  {seconds:.1f} s")
    register_checkpoints(defs, instance, settings)  # the bird lane's registering may have taken some already
    steps = demo_checkpoints(instance, settings, DEMO_DETECTOR["run"], pretrained=False)
    new = [step for step in steps if step not in before]
    for checkpoint in steps:  # registered; no bird task reads its orcahello windows
        benchmark_checkpoint(defs, instance, settings, checkpoint, list(settings.task_names), new)
    return detect_demo_recordings(settings, steps[-1], f"demo-{uuid.uuid4()}")


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


def demo_checkpoints(instance, settings, run: str, *, pretrained: bool = True) -> list[str]:
    """The registered checkpoints of ``run`` by step, then (``pretrained``) the installed pretrained encoders
    (BirdNET)."""
    from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME

    registered = instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME)
    steps = sorted((k for k in registered if k.startswith(f"{run}@")), key=checkpoint_order)
    return steps + [k for k in registered if pretrained and k in settings.pretrained]
