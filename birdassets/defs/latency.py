"""Checkpoint -> scores latency through the running platform (``birdassets bench latency``).

On a ``BIRDASSETS_HOME`` where ``birdassets demo`` has run, ``birdassets ui`` is started with a profile (its
daemon ticks the sensors); once the checkpoint sensor and the automation sensor have ticked, copies of the demo
encoder's last step appear as new training runs (one, then several at once: each copy is staged beside the root
and renamed into it, as Orbax finalizes). The clock runs from that rename to the moment DuckDB holds scores of
every benchmark task for the copy. A copy holds the same weights, so its scores must equal the original's to the
last digit: the measurement checks it, and that no score row is written twice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from birdassets.checkpoints import CheckpointError, discover_checkpoints
from birdassets.checkpoints.refs import CheckpointRef
from birdassets.defs.loadtest import free_loopback_port, wait_until
from birdassets.settings import Settings
from birdassets.store import query_readonly
from birdassets.supervisor import Supervisor

READY_S = 600.0
"""How long to wait for the UI's daemon to tick both sensors once."""
LANDED_S = 900.0
"""How long to wait for a copy's scores."""
POLL_S = 0.5
SCORES_SQL = ("select task, checkpoint, fold, split, probe, metric, value from scores "
              "where list_contains(?, checkpoint) order by task, fold, split, probe, metric")


@dataclass(frozen=True)
class Landing:
    """Copies of one step that appear at once, and when (``time.time()``)."""

    keys: tuple[str, ...]
    landed_at: float


def demo_step(settings: Settings) -> CheckpointRef:
    """The last finalized step of the demo's training run (``CheckpointError`` when the demo has not run)."""
    found = discover_checkpoints(settings.checkpoint_roots)
    run = None
    if found:  # the demo's constants live beside the assets (TensorFlow): imported only when there is a step
        from birdassets.defs.jobs import DEMO_TRAINING

        run = DEMO_TRAINING["run"]
    steps = [ref for ref in found if ref.run == run]
    if not steps:
        raise CheckpointError(f"no finalized step of the demo's training run under "
                              f"{[str(root) for root in settings.checkpoint_roots]}: run `birdassets demo` on this "
                              "BIRDASSETS_HOME first")
    return steps[-1]


def land_copies(source: CheckpointRef, count: int, tag: str) -> Landing:
    """``count`` new runs ``latency-<tag>-<i>`` holding a copy of ``source``'s step, renamed into its root at once."""
    root, staged = source.run_dir.parent, []
    for index in range(count):
        run = f"latency-{tag}-{index}"
        stage = root.parent / f".{run}.staging"
        shutil.copytree(source.step_dir, stage / run / str(source.step))
        staged.append((stage / run, root / run))
    for stage, final in staged:
        os.rename(stage, final)
        stage.parent.rmdir()
    return Landing(tuple(f"{final.name}@{source.step}" for _, final in staged), time.time())


def sensors_ticked(instance: dg.DagsterInstance, names: tuple[str, ...], since: float) -> bool:
    """Every sensor in ``names`` has a tick after ``since`` (``time.time()``)."""
    from dagster._core.scheduler.instigation import InstigatorType

    ticked = set()
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if ticks and ticks[0].timestamp > since:
            ticked.add(state.instigator_name)
    return set(names) <= ticked


def scores_of(settings: Settings, keys) -> pd.DataFrame:
    """Score rows of checkpoints ``keys``, sorted (empty before the metrics DB exists)."""
    if not settings.layout.db_path.exists():
        return pd.DataFrame(columns=["task", "checkpoint"])
    return query_readonly(settings.layout.db_path, SCORES_SQL, [list(keys)])


def landed(settings: Settings, landing: Landing, tasks: list[str], expected: pd.DataFrame) -> dict[str, float]:
    """``{key: seconds}`` of the copies whose scores of every task are in DuckDB, checked against the original's
    (``RuntimeError`` on a difference or a duplicate row)."""
    done = {}
    rows = scores_of(settings, landing.keys)
    for key, copy in rows.groupby("checkpoint"):
        if sorted(set(copy["task"])) != tasks or len(copy) < len(expected):
            continue
        if len(copy) != len(expected) or not (copy.drop(columns="checkpoint").reset_index(drop=True)
                                               .equals(expected.drop(columns="checkpoint").reset_index(drop=True))):
            raise RuntimeError(f"{key}: its scores differ from those of the step it copies")
        done[key] = time.time() - landing.landed_at
    return done


def wait_for_scores(settings: Settings, landing: Landing, tasks: list[str], expected: pd.DataFrame,
                    ui: Supervisor) -> dict[str, float]:
    """``{key: seconds}`` once every copy of ``landing`` has its scores (``RuntimeError`` after :data:`LANDED_S`)."""
    done: dict[str, float] = {}

    def all_landed() -> bool:
        done.update(landed(settings, landing, tasks, expected))
        return len(done) == len(landing.keys)

    wait_until(all_landed, f"the scores of {landing.keys}", LANDED_S, ui, POLL_S)
    return done


def bench_latency(settings: Settings, profile: str, work: Path, batches: tuple[int, ...] = (1, 2)) -> pd.DataFrame:
    """Latency of new checkpoints to DuckDB scores with ``birdassets ui --profile profile`` running: for each
    number in ``batches``, that many copies land at once; one row per copy (seconds, runs it took)."""
    from birdassets.defs.profiles import prepare_instance

    source = demo_step(settings)
    expected = scores_of(settings, [source.key])
    if expected.empty:
        raise CheckpointError(f"no scores of {source.key} in {settings.layout.db_path}: run `birdassets demo` first")
    tasks = sorted(set(expected["task"]))
    prepare_instance(settings, profile)
    with (open(Path(work) / "ui.log", "w") as log, Supervisor() as ui,
          dg.DagsterInstance.get() as instance):
        started = time.time()
        ui.start("ui", [sys.executable, "-c", "from birdassets.cli import main; main()", "ui", "--profile", profile,
                        "--port", str(free_loopback_port())], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: sensors_ticked(instance, ("checkpoint_sensor", "birdassets_automation"), started),
                   "the daemon's first sensor ticks", READY_S, ui, POLL_S)
        rows = []
        for count in batches:
            landing = land_copies(source, count, f"{int(started)}-{count}")
            seconds = wait_for_scores(settings, landing, tasks, expected, ui)
            rows += [{"landed_at_once": count, "checkpoint": key, "seconds": seconds[key],
                      "runs": runs_of(instance, key)} for key in landing.keys]
    return pd.DataFrame(rows)


def runs_of(instance: dg.DagsterInstance, key: str) -> int:
    """Dagster runs of checkpoint ``key``: its task x checkpoint runs (one per task; automation adds none)."""
    own = instance.get_runs_count(dg.RunsFilter(tags={"dagster/partition": key}))
    return own + instance.get_runs_count(dg.RunsFilter(tags={"dagster/partition/checkpoint": key}))
