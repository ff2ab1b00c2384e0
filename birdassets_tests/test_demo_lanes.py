"""The demo's two lanes: the accelerator pool they get, the lock that keeps them from registering checkpoints at
the same time, the benchmark runs they share (each run once), and the order of what they print (a real
``birdassets demo``: the ``demo_home`` fixture)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from birdassets.cli.demo import BenchmarkRun, SharedBenchmarks, benchmark_runs, demo_accelerator_slots
from birdassets.cli.pipeline import registering

TRY_LOCK = ("import fcntl, sys\nwith open(sys.argv[1], 'a') as f:\n"
            "    try:\n        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)\n    except BlockingIOError:\n"
            "        sys.exit(3)\n")
"""A second process trying the registration lock: exit status 3 while another holds it."""


def other_process_locks(path) -> bool:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)]).returncode == 0


def test_registering_excludes_another_process_until_released(tmp_path):
    lock = tmp_path / "dagster" / "register.lock"
    with registering(tmp_path / "dagster"):
        assert lock.exists() and not other_process_locks(lock)
    assert other_process_locks(lock)


LANE = ("import sys, time\nfrom birdassets.cli.demo import SharedBenchmarks\ntaken = []\nprint('ready', flush=True)\n"
        "SharedBenchmarks(sys.argv[1]).take(lambda run: (taken.append(run.checkpoint), time.sleep(0.3)))\n"
        "print(' '.join(taken))\n")
"""A lane taking benchmark runs from the folder ``argv[1]``: prints ``ready``, then the checkpoints it ran."""


def test_two_processes_share_the_benchmark_runs_and_run_each_once(tmp_path):
    folder = tmp_path / "benchmarks"
    lanes = [subprocess.Popen([sys.executable, "-c", LANE, str(folder)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    assert [lane.stdout.readline() for lane in lanes] == ["ready\n"] * 2  # both wait before anything is published
    runs = [BenchmarkRun(f"demo-sup@{step}", ("demo-clear",), True) for step in range(12)]
    SharedBenchmarks(folder).publish(runs)
    taken = [lane.communicate(timeout=120)[0].split() for lane in lanes]
    assert sorted(taken[0] + taken[1], key=lambda key: int(key.split("@")[1])) == [run.checkpoint for run in runs]
    assert taken[0] and taken[1]  # 12 x 0.3 s: the second lane wakes (1 s polls) long before the first is done
    assert all(run == sorted(run, key=lambda key: int(key.split("@")[1])) for run in taken)  # each in order


def test_benchmark_runs_go_longest_first_then_by_step_one_task_each(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDASSETS_HOME", str(tmp_path))
    from birdassets.settings import load_settings

    tasks = ["demo-clear", "demo-noisy"]  # no checkpoint folder yet: every task reads every checkpoint
    runs = benchmark_runs(load_settings(), ["demo-sup@0", "demo-sup@100", "birdnet-v2.4"], tasks, ["demo-sup@100"])
    assert [(run.checkpoint, run.tasks, run.new) for run in runs] == [
        ("birdnet-v2.4", ("demo-clear",), False), ("birdnet-v2.4", ("demo-noisy",), False),
        ("demo-sup@0", ("demo-clear",), False), ("demo-sup@0", ("demo-noisy",), False),
        ("demo-sup@100", ("demo-clear",), True), ("demo-sup@100", ("demo-noisy",), True),
    ]


def test_a_lane_stops_waiting_for_benchmark_runs_when_told_its_parent_is_gone(tmp_path):
    import threading

    calls = []
    lane = threading.Thread(target=SharedBenchmarks(tmp_path).take, args=(calls.append,),
                            kwargs={"alive": lambda: False}, daemon=True)
    lane.start()
    lane.join(timeout=10)
    assert not lane.is_alive() and calls == []  # returned at its first look, nothing published, nothing run


def test_demo_accelerator_slots_follow_the_setting_or_give_each_lane_one(monkeypatch):
    monkeypatch.setenv("BIRDASSETS_ACCELERATORS", "3")
    assert demo_accelerator_slots() == 3
    monkeypatch.delenv("BIRDASSETS_ACCELERATORS")
    import glob

    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this machine has GPUs: the pool is their number, tested in test_profiles")
    assert demo_accelerator_slots() == 2


def test_the_demo_runs_each_benchmark_once_and_prints_the_second_lane_after_the_first(demo_home):
    _, stdout = demo_home
    order = ["materialized raw_audio, mel_dataset, folds  [demo-clear]", "trained demo-sup",
             "demo data demo-orca", "trained demo-orca-resnet18",
             "[demo-clear x demo-orca-resnet18@150]", "[demo-clear x rnn, debug]", "[demo-noisy x rnn, debug]",
             "Call detection on demo-orca", "Leaderboard, cmAP"]
    positions = [stdout.index(line) for line in order]
    assert positions == sorted(positions)
    assert stdout.count("trained demo-orca-resnet18") == 1 and stdout.count("[demo-noisy x rnn, debug]") == 1
    checkpoints = ("demo-sup@0", "demo-sup@100", "demo-sup@200", "birdnet-v2.4")
    benchmarks = [f"[{task} x {key}] (new)" for key in checkpoints for task in ("demo-clear", "demo-noisy")]
    assert [stdout.count(line) for line in benchmarks] == [1] * 8  # shared by the lanes, each run once
    assert all(stdout.index(line) < stdout.index("Call detection on demo-orca") for line in benchmarks)
    assert min(benchmarks, key=stdout.index) == "[demo-clear x birdnet-v2.4] (new)"  # the longest runs go first
