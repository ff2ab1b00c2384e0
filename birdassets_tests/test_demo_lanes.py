"""The demo's two lanes: the accelerator pool they get, the lock that keeps them from registering checkpoints at
the same time, and the order of what they print (a real ``birdassets demo``: the ``demo_home`` fixture)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from birdassets.cli.demo import demo_accelerator_slots
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


def test_demo_accelerator_slots_follow_the_setting_or_give_each_lane_one(monkeypatch):
    monkeypatch.setenv("BIRDASSETS_ACCELERATORS", "3")
    assert demo_accelerator_slots() == 3
    monkeypatch.delenv("BIRDASSETS_ACCELERATORS")
    import glob

    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this machine has GPUs: the pool is their number, tested in test_profiles")
    assert demo_accelerator_slots() == 2


def test_the_demo_prints_the_second_lane_after_the_first_and_the_detections_last(demo_home):
    _, stdout = demo_home
    order = ["materialized raw_audio, mel_dataset, folds  [demo-clear]", "trained demo-sup",
             "[demo-noisy x birdnet-v2.4]", "demo data demo-orca", "trained demo-orca-resnet18",
             "[demo-clear x demo-orca-resnet18@150]", "[demo-clear x rnn, debug]", "[demo-noisy x rnn, debug]",
             "Call detection on demo-orca", "Leaderboard, cmAP"]
    positions = [stdout.index(line) for line in order]
    assert positions == sorted(positions)
    assert stdout.count("trained demo-orca-resnet18") == 1 and stdout.count("[demo-noisy x rnn, debug]") == 1
