"""Scale measurements of the Dagster layer on synthetic checkpoints (``birdassets bench sensor``, ``birdassets
bench load``).

The checkpoint sensor is ticked the way the daemon ticks it: evaluated on a real instance with the previous
tick's cursor, then its new partitions added in one batch. Each tick's time covers both.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from birdassets.checkpoints import scan_checkpoints
from birdassets.checkpoints.synthetic import write_synthetic_runs, write_synthetic_step
from birdassets.defs.partitions import CHECKPOINT_PARTITIONS_NAME
from birdassets.defs.resources import BirdassetsHome
from birdassets.settings import load_settings
from birdassets.supervisor import Supervisor

WEBSERVER_START_S = 300.0
"""How long the load test waits for the webserver to load the code location."""

SETTLE_S = 2.1
"""Wait after writing, so that run folders are old enough for the watcher to trust their mtimes (2 s)."""


@dataclass
class SensorTicker:
    """The checkpoint sensor of the code location of ``home``, ticked on ``instance`` as the daemon does (its
    tasks recorded as built first: :func:`mark_tasks_built`)."""

    home: Path
    instance: dg.DagsterInstance
    cursor: str | None = None

    def __post_init__(self) -> None:
        from birdassets.definitions import build_definitions

        settings = load_settings(self.home)
        self.defs = build_definitions(settings)
        self.sensor = self.defs.resolve_sensor_def("checkpoint_sensor")
        mark_tasks_built(self.instance, settings)

    def tick(self) -> dict:
        """One tick: ``{"seconds", "registered", "requested", "cursor_kb"}``."""
        started = time.perf_counter()
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=self.defs,
                                          resources={"birdassets": BirdassetsHome(home=str(self.home))})
        result = self.sensor(context)
        added = [key for request in result.dynamic_partitions_requests for key in request.partition_keys]
        if added:
            self.instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME, added)
        self.cursor = result.cursor
        return {"seconds": time.perf_counter() - started, "registered": len(added),
                "requested": len(result.run_requests), "cursor_kb": len(self.cursor or "") / 1024}


def mark_tasks_built(instance: dg.DagsterInstance, settings) -> None:
    """Record every task as built under its current configuration (runless ``raw_audio``, then ``folds``
    materializations), so the checkpoint sensor requests one run per task for each new checkpoint, as on a
    working home."""
    for task in settings.task_names:
        fingerprint = {"task_fingerprint": settings.task_fingerprint(task)}
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_audio", partition=task, metadata=fingerprint))
        instance.report_runless_asset_event(dg.AssetMaterialization("folds", partition=task))


def synthetic_home(work: Path, runs: int, steps: int, tasks: int = 0) -> Path:
    """A ``BIRDASSETS_HOME`` under ``work`` whose checkpoint root holds ``runs`` x ``steps`` synthetic steps;
    ``tasks`` > 0 configures that many folder tasks instead of the demo tasks."""
    home = Path(work) / "home"
    home.mkdir(parents=True, exist_ok=True)
    write_synthetic_runs(home / "runs", runs, steps)
    config = f'checkpoint_roots = ["{home / "runs"}"]\npretrained = []\n'
    if tasks:
        config += "include_demo = false\n" + "".join(
            f'[[datasets]]\nname = "task-{task}"\nsource = "folder"\nroot = "{home / "audio"}"\n\n'
            for task in range(tasks))
    (home / "birdassets.toml").write_text(config)
    return home


def rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_sensor(work: Path, runs: int = 100, steps: int = 100) -> pd.DataFrame:
    """Tick times of the checkpoint sensor over ``runs`` x ``steps`` synthetic finalized steps: the full listing
    every tick used to do, the first tick, the ticks that drain the backlog, a quiet tick, a tick after one new
    step; one row each, with the partitions registered, the cursor size and the peak RSS."""
    home = synthetic_home(work, runs, steps)
    time.sleep(SETTLE_S)
    started = time.perf_counter()
    found = len(scan_checkpoints([home / "runs"]).checkpoints)
    rows = [{"tick": "full listing (scan_checkpoints)", "seconds": time.perf_counter() - started,
             "registered": found, "requested": 0, "cursor_kb": 0.0}]
    (Path(work) / "dagster").mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(str(Path(work) / "dagster")) as instance:
        ticker = SensorTicker(home, instance)
        rows.append({"tick": "first", **ticker.tick()})
        draining = []
        while len(instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME)) < found:
            draining.append(ticker.tick())
        rows.append(_summary(f"draining (max of {len(draining)})", draining))
        rows.append({"tick": "quiet", **ticker.tick()})
        write_synthetic_step(home / "runs" / "run-0000", steps * 100)
        rows.append({"tick": "one new step", **ticker.tick()})
    frame = pd.DataFrame(rows)
    frame["rss_mb"] = rss_mb()
    return frame


def _summary(name: str, ticks: list[dict]) -> dict:
    """The slowest of ``ticks``, with the partitions registered summed."""
    if not ticks:
        return {"tick": name, "seconds": 0.0, "registered": 0, "requested": 0, "cursor_kb": 0.0}
    slowest = max(ticks, key=lambda tick: tick["seconds"])
    return {**slowest, "tick": name, "registered": sum(tick["registered"] for tick in ticks),
            "requested": sum(tick["requested"] for tick in ticks)}


PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey
            secondaryDim {
              ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
            }
          }
        }
      }
    }
  }
}
"""
"""What the UI's asset page asks for a partitioned asset (its ``PartitionHealthQuery``, with the partition counts
of the overview), as the 1.13 webapp sends it."""


def load_test(work: Path, runs: int = 50, steps: int = 20, tasks: int = 8) -> pd.DataFrame:
    """``runs`` x ``steps`` synthetic checkpoints registered by the sensor on a real SQLite instance, ``scores``
    materialized for every task x checkpoint, 200 score rows each in DuckDB; then the sensor tick, the UI's
    asset-page GraphQL on a loopback webserver and the DuckDB leaderboard queries timed. One row per measure."""
    home = synthetic_home(work, runs, steps, tasks)
    time.sleep(SETTLE_S)
    instance_dir = Path(work) / "dagster"
    instance_dir.mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(str(instance_dir)) as instance:
        ticker = SensorTicker(home, instance)
        rows = register_all(ticker, runs * steps)
        settings = load_settings(home)
        keys = instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS_NAME)
        rows.append(_timed("record scores materializations (Dagster)", materialize_scores, instance,
                           settings.task_names, keys))
        rows += automation_timings(ticker.defs, instance)
    rows += leaderboard_timings(settings.layout.db_path, settings.task_names, keys)
    rows += asset_page_timings(home, instance_dir, len(settings.task_names) * len(keys))
    return pd.DataFrame(rows)


def register_all(ticker: SensorTicker, expected: int) -> list[dict]:
    """Tick until ``expected`` checkpoints are registered; rows of the first, the slowest and a quiet tick."""
    ticks = [ticker.tick()]
    while sum(tick["registered"] for tick in ticks) < expected:
        ticks.append(ticker.tick())
    quiet = ticker.tick()
    return [{"measure": "sensor tick, first", "seconds": ticks[0]["seconds"], "count": ticks[0]["registered"]},
            {"measure": f"sensor tick, slowest of {len(ticks)}", "seconds": max(t["seconds"] for t in ticks),
             "count": sum(t["registered"] for t in ticks)},
            {"measure": "sensor tick, quiet", "seconds": quiet["seconds"], "count": quiet["registered"]}]


def automation_timings(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dict]:
    """Two ticks of declarative automation over every asset (the second with the first's cursor), as the
    ``birdassets_automation`` sensor evaluates them; ``count`` is the partitions requested."""
    rows, cursor = [], None
    for name in ("automation tick, first", "automation tick, next"):
        started = time.perf_counter()
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        rows.append({"measure": name, "seconds": time.perf_counter() - started,
                     "count": result.total_requested})
        cursor = result.cursor
    return rows


def materialize_scores(instance: dg.DagsterInstance, tasks, checkpoints) -> int:
    """Record a runless ``scores`` materialization of every task x checkpoint; returns how many."""
    for task in tasks:
        for checkpoint in checkpoints:
            partition = dg.MultiPartitionKey({"task": task, "checkpoint": checkpoint})
            instance.report_runless_asset_event(dg.AssetMaterialization("scores", partition=partition))
    return len(tasks) * len(checkpoints)


def _timed(measure: str, fn, *args) -> dict:
    started = time.perf_counter()
    count = fn(*args)
    return {"measure": measure, "seconds": time.perf_counter() - started, "count": count}


def leaderboard_timings(db_path: Path, tasks, checkpoints) -> list[dict]:
    """Synthetic scores written for every task x checkpoint, then the leaderboard read whole and one task's
    validation cmAP (what ``birdassets benchmark`` prints) timed; ``count`` is the rows returned."""
    from birdassets.cli.pipeline import LEADERBOARD_SQL
    from birdassets.store import query_readonly
    from birdassets.store.synthetic import write_synthetic_scores

    rows = [_timed("write synthetic scores (DuckDB)", write_synthetic_scores, db_path, tasks, checkpoints)]
    rows.append(_timed("leaderboard, every row", lambda: len(query_readonly(db_path, "select * from leaderboard"))))
    rows.append(_timed("leaderboard, one task's valid cmAP", lambda: len(
        query_readonly(db_path, LEADERBOARD_SQL, [[tasks[0]], True, []]))))
    return rows


def asset_page_timings(home: Path, instance_dir: Path, partitions: int, repeats: int = 3) -> list[dict]:
    """The ``scores`` asset page's GraphQL on a webserver on loopback over this instance: first and best of
    ``repeats``; ``count`` is the materialized partitions the webserver reports (checked against ``partitions``)."""
    with loopback_webserver(home, instance_dir) as url:
        first, stats = graphql_seconds(url, PARTITION_HEALTH_QUERY, {"assetKey": {"path": ["scores"]}})
        best = min(graphql_seconds(url, PARTITION_HEALTH_QUERY, {"assetKey": {"path": ["scores"]}})[0]
                   for _ in range(repeats))
    if stats["numMaterialized"] != partitions or stats["numPartitions"] != partitions:
        raise RuntimeError(f"the webserver reports {stats}, expected {partitions} materialized partitions")
    return [{"measure": "UI asset page GraphQL (scores), first", "seconds": first, "count": partitions},
            {"measure": f"UI asset page GraphQL (scores), best of {repeats}", "seconds": best, "count": partitions}]


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def loopback_webserver(home: Path, instance_dir: Path) -> Iterator[str]:
    """A ``dagster-webserver`` on 127.0.0.1 serving this project's definitions over the instance in
    ``instance_dir``; yields its URL once the code location has loaded, stops it on leaving."""
    workspace = Path(instance_dir) / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: birdassets.definitions\n")
    url = f"http://127.0.0.1:{free_loopback_port()}"
    env = {**os.environ, "DAGSTER_HOME": str(instance_dir), "BIRDASSETS_HOME": str(home)}
    with Supervisor() as children:
        children.start("webserver", [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p",
                                     url.rsplit(":", 1)[1], "-w", str(workspace)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: location_loaded(url), f"the webserver at {url} to load the code location",
                   WEBSERVER_START_S, children)
        yield url


def wait_until(condition, what: str, seconds: float, children: Supervisor, poll_s: float = 0.5) -> None:
    """Poll ``condition()`` until it is true; ``RuntimeError`` naming ``what`` once a child exited or after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if children.exited() or time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} (see its log)")
        time.sleep(poll_s)


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """POST ``query`` to the webserver's ``/graphql``; its ``data``."""
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)["data"]


def location_loaded(url: str) -> bool:
    try:
        data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus "
                            "locationOrLoadError { __typename } } } } }")
    except OSError:
        return False
    entries = data["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def graphql_seconds(url: str, query: str, variables: dict) -> tuple[float, dict]:
    """Wall time of one asset-page query, and the asset's ``partitionStats``."""
    started = time.perf_counter()
    data = graphql(url, query, variables)
    return time.perf_counter() - started, data["assetNodeOrError"]["partitionStats"]
