"""The production profile for real: PostgreSQL storage, the daemon's run queue, a RabbitMQ broker and two
``birdassets worker`` processes (Celery) benchmark 2 tasks x 3 checkpoints with several runs at once; one worker
is killed by its PID in the middle of a step, the broker gives the step to another worker, and every score lands
in DuckDB exactly once.

Needs the Debian packages ``postgresql`` and ``rabbitmq-server`` (``.ci/run`` installs them): skipped with the
reason where they are missing, except under ``CI``, where their absence fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.stats import StepEventStatus

from birdassets.defs.profiles import with_driver
from birdassets.sources.demo import DemoTaskSpec, generate
from birdassets.store import query_readonly
from birdassets.supervisor import Supervisor
from birdassets_tests.conftest import write_tiny_vit
from birdassets_tests.services import missing_services, postgres, rabbitmq
from birdassets_tests.ui_server import kill_all, start_ui

pytestmark = pytest.mark.slow
TASKS = ("mini-a", "mini-b")
RUN, STEPS = "tiny", (0, 1, 2)
PARTITIONS = {f"{RUN}@{step}|{task}" for task in TASKS for step in STEPS}  # evaluation keys: checkpoint|task
DUCKDB_WRITERS = ("raw_audio", "encoder", "metrics_db")
"""The steps of these runs in the ``duckdb`` pool (they write the metrics database)."""
FINISH_S = 480
POLL_S = 0.25


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """``(PostgreSQL URL, broker URL)`` of servers started for this module."""
    reason = missing_services()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the production profile; it {reason}")
        pytest.skip(f"the production profile test {reason}")
    with postgres() as database, rabbitmq(tmp_path_factory.mktemp("rabbitmq")) as broker:
        yield database, broker


@pytest.fixture(scope="module")
def home(tmp_path_factory, services) -> Path:
    """Two small BirdCLEF-layout tasks, three tiny ViT steps, executor celery on the test broker."""
    home = tmp_path_factory.mktemp("production-home")
    for seed, task in enumerate(TASKS, start=7):
        generate(DemoTaskSpec(name=task, seed=seed, n_species=6, train_per_species=3, train_length_s=(3.0, 6.0),
                              n_test_windows=12, windows_per_soundscape=4), home / f"{task}-data")
    for step in STEPS:
        write_tiny_vit(home / "runs" / RUN, step, seed=step)
    datasets = "".join(f'[[datasets]]\nname = "{t}"\nsource = "birdclef"\nroot = "{home / f"{t}-data"}"\n' for t in TASKS)
    (home / "birdassets.toml").write_text(
        f'include_demo = false\ncheckpoint_roots = ["{home / "runs"}"]\nprobes = ["centroid"]\npretrained = []\n'
        f'executor = "celery"\ncelery_broker = "{services[1]}"\n{datasets}')
    return home


def start_worker(workers: Supervisor, home: Path, env: dict, name: str):
    with (home / f"worker-{name}.log").open("w") as log:  # the worker writes through its own copy
        return workers.start(name, [sys.executable, "-m", "birdassets.cli", "worker", "--name", name],
                             env={**os.environ, "BIRDASSETS_HOME": str(home), **env}, stdout=log, stderr=log)


def step_executions(instance, run_id: str, step: str) -> list[tuple[float, str]]:
    """``(timestamp, worker name)`` of each Celery execution of ``step`` in the run, in order."""
    found = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata if entry.dagster_event else {}
        if entry.step_key == step and "Celery worker" in metadata:  # "Executing steps <step> in celery worker"
            found.append((entry.timestamp, metadata["Celery worker"].value.split("@")[0]))
    return found


def kill_first_embedding(instance, workers: dict, deadline: float) -> tuple[str, str, float]:
    """SIGKILL the worker that starts the first ``embeddings`` step; ``(run id, worker name, time of the kill)``."""
    while time.monotonic() < deadline:
        for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            executions = step_executions(instance, run.run_id, "embeddings")
            if executions:
                name = executions[0][1]
                os.kill(workers[name].process.pid, signal.SIGKILL)
                return run.run_id, name, time.time()
        time.sleep(POLL_S)
    raise AssertionError("no embeddings step started")


def failure_messages(instance, runs) -> list[str]:
    """``"<job> [<partition>] <step>: <message>"`` of every failed step and run."""
    failed = (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE)
    return [f"{run.job_name} [{run.tags.get('dagster/partition')}] {entry.step_key}: {entry.dagster_event.message}"
            for run in runs if run.status != dg.DagsterRunStatus.SUCCESS
            for entry in instance.all_logs(run.run_id) if entry.dagster_event and entry.dagster_event.event_type in failed]


def finished(instance) -> bool:
    runs = instance.get_runs()
    return (set(instance.get_materialized_partitions(dg.AssetKey("metrics_db"))) >= PARTITIONS
            and all(run.is_finished for run in runs))


def test_benchmark_runs_on_postgres_and_celery_workers_and_survives_a_killed_worker(
        home, services, artifacts_dir, monkeypatch):
    database, _ = services
    env = {"BIRDASSETS_PROFILE": "production", "BIRDASSETS_POSTGRES_URL": database, "TF_CPP_MIN_LOG_LEVEL": "3",
           "BIRDASSETS_ACCELERATORS": "2"}  # the accelerator pool (embeddings) sized to the two workers
    monkeypatch.setenv("BIRDASSETS_POSTGRES_URL", with_driver(database))  # this process reads the instance too
    started, servers = time.monotonic(), []
    with Supervisor() as workers:
        try:
            pool = {name: start_worker(workers, home, env, name) for name in ("w1", "w2")}
            start_ui(home, [], servers, env=env)  # webserver, daemon (sensors, automation, run queue)
            with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
                run_id, killed, killed_at = kill_first_embedding(instance, pool, started + FINISH_S)
                pool["w3"] = start_worker(workers, home, env, "w3")  # a replacement, as a supervisor would start
                while not finished(instance) and time.monotonic() < started + FINISH_S:
                    time.sleep(1.0)
                wall_s = time.monotonic() - started
                runs = instance.get_runs()
                records = [instance.get_run_record_by_id(run.run_id) for run in runs]
                stats = {run.run_id: instance.get_run_step_stats(run.run_id) for run in runs}
                executions = step_executions(instance, run_id, "embeddings")
                failures = failure_messages(instance, runs)
                materialized = {key: set(instance.get_materialized_partitions(dg.AssetKey(key)))
                                for key in ("raw_audio", "encoder", "embeddings", "scores", "metrics_db")}
                repeated = {key: materialized_twice(instance, key) for key in CHAIN}
        finally:
            for server in servers:
                kill_all(server)

    # every run succeeded; every partition is materialized
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}, failures
    # every asset partition materialized exactly once: no run for a check alone, no retry, no duplicate request;
    # one data run per task and one run per task x checkpoint, encoder to DuckDB (from the checkpoint sensor when
    # the task was built, else from automation once it is)
    assert repeated == {key: [] for key in CHAIN}
    layout = sorted((r.tags.get("dagster/partition"), sorted(k.path[-1] for k in r.asset_selection or ()))
                    for r in runs)
    assert len(runs) == len(TASKS) + len(PARTITIONS), layout
    assert materialized["raw_audio"] == set(TASKS)
    for key in ("encoder", "embeddings", "scores", "metrics_db"):
        assert materialized[key] == PARTITIONS, key

    # the killed worker's step went back to the queue and ran again on another worker, after the kill
    assert executions[0][1] == killed and len(executions) == 2, executions
    assert executions[1][1] != killed and executions[1][0] > killed_at
    (embedded,) = [s for s in stats[run_id] if s.step_key == "embeddings"]
    assert embedded.status == StepEventStatus.SUCCESS and embedded.end_time > killed_at

    # at least two runs at once; the duckdb pool let one writer step run at a time, across all runs
    spans = sorted((record.start_time, record.end_time) for record in records)
    assert max_overlap(spans) >= 2, spans
    writers = sorted((s.start_time, s.end_time, s.step_key) for run_stats in stats.values() for s in run_stats
                     if s.step_key in DUCKDB_WRITERS)
    assert len(writers) == len(TASKS) + 2 * len(PARTITIONS)  # raw_audio per task; encoder, metrics_db per pair
    for (_, end, first), (start, _, second) in zip(writers, writers[1:]):
        assert start >= end, f"{first} and {second} wrote DuckDB at once"

    # scores landed exactly once per task x checkpoint x probe x fold x split x metric
    db = home / "birdassets.duckdb"
    duplicates = query_readonly(db, "select task, checkpoint, probe, fold, split, metric, count(*) as n from scores "
                                    "group by all having count(*) > 1")
    assert duplicates.empty, duplicates
    lineage = query_readonly(db, "select task, checkpoint, run_id from lineage")
    assert {f"{c}|{t}" for t, c in zip(lineage["task"], lineage["checkpoint"])} == PARTITIONS and len(lineage) == 6

    logs = "".join(path.read_text(errors="replace") for path in home.glob("*.log"))
    assert "database is locked" not in logs
    (artifacts_dir / "production_profile.json").write_text(json.dumps({
        "wall_s": round(wall_s, 1), "runs": len(runs), "max_concurrent_runs": max_overlap(spans),
        "killed_worker": killed, "redelivered_to": executions[1][1],
        "redelivery_s": round(executions[1][0] - killed_at, 1)}, indent=2))


CHAIN = ("raw_audio", "mel_dataset", "folds", "encoder", "embeddings", "probe", "scores", "metrics_db")


def materialized_twice(instance, key: str) -> list[str]:
    """The partitions of asset ``key`` with more than one materialization."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(key)), limit=10_000).records
    partitions = [record.partition_key for record in records]
    return sorted({partition for partition in partitions if partitions.count(partition) > 1})


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals ``(start, end)`` open at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    depth = best = 0
    for _, step in events:
        depth += step
        best = max(best, depth)
    return best
