"""Incremental checkpoint discovery (issue #15, item 3): the watcher finds what a full scan finds, lists only the
run folders that changed, hands out at most ``limit`` new checkpoints per tick and never one twice; the sensor on
a real Dagster instance registers 100 per tick; synthetic scores fill DuckDB in the shape of real evaluations."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from birdassets.checkpoints import scan_checkpoints
from birdassets.checkpoints.watcher import WatchState, watch_checkpoints
from birdassets.store import query_readonly


def finalized(run_dir: Path, step: int, *, commit: bool = True) -> Path:
    """A step folder holding Orbax's metadata file, and (``commit``) its commit marker."""
    step_dir = run_dir / str(step)
    step_dir.mkdir(parents=True)
    (step_dir / "_CHECKPOINT_METADATA").write_text('{"item_handlers": {}}')
    if commit:
        (step_dir / "commit_success.txt").write_text("")
    return step_dir


def age(*folders: Path, seconds: float = 60.0) -> None:
    """Set the folders' mtimes ``seconds`` into the past (older than the watcher's 2 s racy window)."""
    then = time.time() - seconds
    for folder in folders:
        os.utime(folder, (then, then))


def keys(tick) -> list[str]:
    return [ref.key for ref in tick.new]


def test_ticks_find_what_a_full_scan_finds_and_list_only_the_runs_that_changed(tmp_path):
    root = tmp_path / "runs"
    for run, steps in (("a", (0, 100)), ("b", (0,)), ("c", (5, 10))):
        for step in steps:
            finalized(root / run, step)
    (root / "b" / "200.orbax-checkpoint-tmp-17").mkdir()  # in flight: not a step
    age(root / "a", root / "b", root / "c")
    first = watch_checkpoints([root], WatchState(), known=set(), limit=100)
    assert keys(first) == ["a@0", "a@100", "b@0", "c@5", "c@10"] == scan_checkpoints([root]).keys
    assert first.listed == 3
    quiet = watch_checkpoints([root], first.state, known=set(keys(first)), limit=100)
    assert keys(quiet) == [] and quiet.listed == 0

    finalized(root / "b", 300)  # b's mtime is now fresh: listed now, and again at the next tick (racy)
    fresh = watch_checkpoints([root], quiet.state, known=set(keys(first)), limit=100)
    assert keys(fresh) == ["b@300"] and fresh.listed == 1
    again = watch_checkpoints([root], fresh.state, known={*keys(first), "b@300"}, limit=100)
    assert keys(again) == [] and again.listed == 1
    age(root / "b")
    settled = watch_checkpoints([root], again.state, known={*keys(first), "b@300"}, limit=100)
    assert settled.listed == 1  # the stamp changed once more (aged); from now on b is trusted
    assert watch_checkpoints([root], settled.state, known={*keys(first), "b@300"}, limit=100).listed == 0


def test_a_step_finalized_inside_its_existing_folder_is_found_without_listing_its_run(tmp_path):
    root = tmp_path / "runs"
    finalized(root / "a", 0)
    late = finalized(root / "a", 100, commit=False)  # commit-file mode: the marker comes later, in place
    age(root / "a")
    first = watch_checkpoints([root], WatchState(), known=set(), limit=100)
    assert keys(first) == ["a@0"]
    state = WatchState.from_json(first.state.to_json())  # the cursor round-trips through JSON
    (late / "commit_success.txt").write_text("")
    second = watch_checkpoints([root], state, known={"a@0"}, limit=100)
    assert keys(second) == ["a@100"] and second.listed == 0


def test_new_checkpoints_come_at_most_limit_per_tick_by_run_and_step_and_never_twice(tmp_path):
    root = tmp_path / "runs"
    for run in ("a", "b", "c"):
        for step in range(0, 900, 100):
            finalized(root / run, step)
    age(root / "a", root / "b", root / "c")
    state, known, handed, waiting = WatchState(), set(), [], []
    for _ in range(4):
        tick = watch_checkpoints([root], WatchState.from_json(state.to_json()), known, limit=10)
        handed.append(keys(tick))
        known |= set(keys(tick))  # the sensor registers what it is handed
        state = tick.state
        waiting.append(state.waiting)
    assert handed[0] == [f"a@{step}" for step in range(0, 900, 100)] + ["b@0"]
    assert [len(batch) for batch in handed] == [10, 10, 7, 0] and waiting == [17, 7, 0, 0]
    every = [key for batch in handed for key in batch]
    assert len(every) == len(set(every)) == 27


def test_an_old_cursor_starts_from_a_full_listing_and_registered_keys_are_not_handed_out_again(tmp_path):
    root = tmp_path / "runs"
    finalized(root / "a", 0)
    finalized(root / "a", 7)
    assert WatchState.from_json("2") == WatchState() == WatchState.from_json(None)  # the sensor's old cursor
    tick = watch_checkpoints([root], WatchState.from_json("2"), known={"a@0"}, limit=100)
    assert keys(tick) == ["a@7"] and tick.listed == 1


def test_a_run_name_in_two_roots_is_skipped_until_one_copy_is_gone(tmp_path):
    first, second = tmp_path / "x", tmp_path / "y"
    finalized(first / "run", 0)
    finalized(second / "run", 0)
    finalized(first / "only", 1)
    tick = watch_checkpoints([first, second], WatchState(), known=set(), limit=100)
    assert keys(tick) == ["only@1"]
    both = f"({first / 'run'} and {second / 'run'})"
    assert {str(s.path): s.reason for s in tick.skipped} == {
        str(folder / "run"): f"run name 'run' is in several checkpoint roots {both}; run names must be unique "
                             "across roots: rename one" for folder in (first, second)}
    shutil.rmtree(second / "run")
    after = watch_checkpoints([first, second], tick.state, known={"only@1"}, limit=100)
    assert keys(after) == ["run@0"] and after.skipped == ()


def test_a_run_folder_removed_while_its_steps_wait_takes_them_out_of_the_backlog(tmp_path):
    root = tmp_path / "runs"
    for step in (0, 1, 2):
        finalized(root / "gone", step)
    first = watch_checkpoints([root], WatchState(), known=set(), limit=1)
    assert keys(first) == ["gone@0"] and first.state.waiting == 2
    shutil.rmtree(root / "gone")
    second = watch_checkpoints([root], first.state, known={"gone@0"}, limit=1)
    assert keys(second) == [] and second.state.waiting == 0 and second.state.runs == {}


def test_the_sensor_registers_100_checkpoints_per_tick_on_a_real_instance(tmp_path):
    """135 synthetic steps, the two demo tasks built: 100 checkpoints (200 runs, one per task) per tick."""
    from birdassets.defs.loadtest import bench_sensor

    ticks = bench_sensor(tmp_path, runs=3, steps=45).set_index("tick")
    assert ticks.loc["full listing (scan_checkpoints)", "registered"] == 135
    assert ticks.loc["first", ["registered", "requested"]].tolist() == [100, 200]
    assert ticks.loc["draining (max of 1)", ["registered", "requested"]].tolist() == [35, 70]
    assert ticks.loc["quiet", ["registered", "requested"]].tolist() == [0, 0]
    assert ticks.loc["one new step", ["registered", "requested"]].tolist() == [1, 2]
    assert (ticks["cursor_kb"] < 4).all()


def test_runs_per_tick_cap_the_checkpoints_registered_per_tick():
    from birdassets.defs.sensors import checkpoints_per_tick

    assert [checkpoints_per_tick(tasks) for tasks in (0, 1, 2, 3, 8, 200, 500)] == [100, 100, 100, 66, 25, 1, 1]


@pytest.mark.parametrize("again", [False, True])
def test_synthetic_scores_have_the_shape_of_real_evaluations_and_rewriting_replaces_them(tmp_path, again):
    from birdassets.store.synthetic import write_synthetic_scores

    db = tmp_path / "metrics.duckdb"
    checkpoints = ["r@0", "r@100", "s@5"]
    for _ in range(2 if again else 1):
        assert write_synthetic_scores(db, ["t1", "t2"], checkpoints) == 2 * 3 * 200
    counts = query_readonly(db, "select count(*) as n, count(distinct (task, checkpoint)) as pairs, "
                                "min(value) >= 0 and max(value) < 1 as unit, sum(step) as steps from scores")
    assert counts.iloc[0].tolist() == [1200, 6, True, 2 * 200 * (0 + 100 + 5)]
    board = query_readonly(db, "select * from leaderboard")
    assert len(board) == 2 * 3 * 4 * 2 * 5 and set(board["n_folds"]) == {5}
    assert len(query_readonly(db, "select * from lineage")) == 6


def test_new_steps_are_seen_within_5_s_and_automation_ticks_every_30_s(tmp_path):
    """The loop's latency settings: the checkpoint sensor every 5 s (its quiet tick costs milliseconds),
    automation at Dagster's default 30 s."""
    from birdassets.definitions import build_definitions
    from birdassets.settings import load_settings

    defs = build_definitions(load_settings(tmp_path))
    assert defs.resolve_sensor_def("checkpoint_sensor").minimum_interval_seconds == 5
    assert defs.resolve_sensor_def("birdassets_automation").minimum_interval_seconds == 30


def test_the_command_line_registers_every_checkpoint_past_the_per_tick_cap(tmp_path):
    """``birdassets benchmark``/``demo`` tick the sensor until nothing is new: 135 steps, 100 per tick."""
    import dagster as dg

    from birdassets.cli.pipeline import register_checkpoints
    from birdassets.definitions import build_definitions
    from birdassets.defs.loadtest import synthetic_home
    from birdassets.settings import load_settings

    home = synthetic_home(tmp_path, runs=3, steps=45)
    settings = load_settings(home)
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        requested = register_checkpoints(build_definitions(settings), instance, settings)
        registered = instance.get_dynamic_partitions("birdassets_checkpoint")
    assert len(requested) == len(set(requested)) == 135
    assert sorted(registered) == sorted(requested) and "run-0002@4400" in registered


def test_a_folder_whose_name_cannot_be_a_run_is_skipped_by_both_scans_and_the_others_found(tmp_path):
    root = tmp_path / "runs"
    finalized(root / "a,b", 0)  # ',' separates partition keys: never a run name
    finalized(root / "good", 3)
    full = scan_checkpoints([root])
    tick = watch_checkpoints([root], WatchState(), known=set(), limit=100)
    assert full.keys == keys(tick) == ["good@3"]
    for skipped in (full.skipped, tick.skipped):
        ((path, reason),) = [(str(s.path), s.reason) for s in skipped]
        assert path == str(root / "a,b") and reason.startswith("not a run folder: run name 'a,b' contains forbidden")


def test_the_sensor_sends_a_checkpoint_only_to_the_built_tasks_whose_windows_it_reads(tmp_path):
    """One run per built task and new checkpoint; a detector of ``orcahello`` windows gets no BirdCLEF task (its
    encoder alone runs), a model naming no preset gets every task, and an unbuilt task waits for automation."""
    import dagster as dg

    from birdassets.definitions import build_definitions
    from birdassets.defs.loadtest import mark_tasks_built
    from birdassets.defs.resources import BirdassetsHome
    from birdassets.settings import load_settings

    home = tmp_path / "home"
    for run, preset in (("det", "orcahello"), ("vit", "birdclef2025"), ("plain", None)):
        step = finalized(home / "runs" / run, 10)
        if preset:
            (step / "config").mkdir()
            (step / "config" / "metadata").write_text(json.dumps({"preset": preset, "family": "x"}))
    age(*(home / "runs").iterdir(), home / "runs")
    (home / "birdassets.toml").write_text(f'checkpoint_roots = ["{home / "runs"}"]\npretrained = []\n')
    settings = load_settings(home)
    assert {settings.task_preset(task).name for task in settings.task_names} == {"birdclef2025"}
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("checkpoint_sensor")
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        context = dg.build_sensor_context(instance=instance, definitions=defs,
                                          resources={"birdassets": BirdassetsHome(home=str(home))})
        assert sensor(context).run_requests == []  # no task built yet
        mark_tasks_built(instance, load_settings(home))
        first, second = settings.task_names
        rebuilding = {"task_fingerprint": settings.task_fingerprint(second)}  # same configuration, folds not yet
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_audio", partition=second, metadata=rebuilding))
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs,
                                                resources={"birdassets": BirdassetsHome(home=str(home))}))
    asked = sorted((r.partition_key.keys_by_dimension["checkpoint"], r.partition_key.keys_by_dimension["task"],
                    r.job_name) for r in result.run_requests)
    assert asked == [("det@10", first, "encoder_job"),  # restored and listed; nothing to embed
                     ("plain@10", first, "benchmark_job"), ("vit@10", first, "benchmark_job")]
