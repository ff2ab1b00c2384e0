"""The DuckDB writer waits, with backoff and a bound, for another process holding the file, then names it.

A real second process holds the metrics database (a connection kept open until the test releases it); the
writer is the store's own :class:`MetricsStore`, the one the ``metrics_db`` step uses.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from birdassets.cli import main
from birdassets.store import MetricsStore, StoreLockedError
from birdassets_tests.test_store import assert_same_state, make_record, snapshot

HOLDER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "reader")
    print("held", flush=True)
    sys.stdin.readline()  # until the test releases it
    con.close()
    """
)


class Holder:
    """A second process holding ``path`` open (as a reader or a writer) until :meth:`release`."""

    def __init__(self, path: Path, kind: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "held"
        self.pid = self.process.pid

    def release(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.write("\n")
            self.process.stdin.close()

    def stop(self) -> int:
        self.release()
        return self.process.wait(timeout=30)


@pytest.fixture
def store(tmp_path) -> MetricsStore:
    store = MetricsStore(tmp_path / "home" / "birdassets.duckdb", lock_timeout_s=30)
    store.record_evaluation(make_record(run_id="run-old", version="old"))
    return store


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        if holder.process.poll() is None:
            holder.process.kill()
            holder.process.wait(timeout=30)


def test_the_default_budget_outlasts_a_reader_holding_the_file_for_a_minute(store):
    from birdassets.store.connection import DEFAULT_LOCK_TIMEOUT_S, FIRST_BACKOFF_S, MAX_BACKOFF_S

    assert MetricsStore(store.path).lock_timeout_s == DEFAULT_LOCK_TIMEOUT_S >= 120
    assert FIRST_BACKOFF_S < MAX_BACKOFF_S <= 5  # exponential, capped: retries stay frequent


def test_the_writer_waits_for_a_reader_to_let_go_then_writes(store, holders):
    holder = Holder(store.path, "reader")
    holders.append(holder)
    threading.Timer(1.5, holder.release).start()
    started = time.monotonic()
    writer = MetricsStore(store.path, lock_timeout_s=30)
    written = writer.record_evaluation(make_record(run_id="run-new", version="new"))
    waited = time.monotonic() - started
    assert holder.stop() == 0
    assert waited >= 1.4, "the writer got in while the reader still held the file"
    assert waited < 15
    board = store.query("select distinct run_id from scores")
    assert board["run_id"].tolist() == ["run-new"] and written == 5 * 2 * 4


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_the_writer_gives_up_after_its_budget_naming_the_pid_and_the_file(store, holders, kind):
    before = snapshot(store)
    holder = Holder(store.path, kind)
    holders.append(holder)
    started = time.monotonic()
    with pytest.raises(StoreLockedError) as info:
        MetricsStore(store.path, lock_timeout_s=2).record_evaluation(make_record(run_id="run-new", version="new"))
    elapsed = time.monotonic() - started
    assert holder.process.poll() is None  # still holding: the writer did not get in
    assert holder.stop() == 0

    error = info.value
    assert 2 <= elapsed < 8
    assert (error.holder_pid, error.path) == (holder.pid, store.path)
    assert error.holder_program and "python" in error.holder_program
    message = str(error)
    assert message.startswith(f"{store.path}: metrics database is locked by another process, PID {holder.pid} (")
    attempts = int(re.search(r"gave up after (\d+) attempt\(s\) over 2 s", message)[1])
    assert 4 <= attempts <= 12  # 0.05 s doubling: backoff, neither one try nor a busy loop
    assert_same_state(store, before)
    restored = pickle.loads(pickle.dumps(error))
    assert (str(restored), restored.holder_pid) == (message, holder.pid)


def test_birdassets_query_waits_for_a_writer_too(store, holders, monkeypatch, capsys):
    monkeypatch.setenv("BIRDASSETS_HOME", str(store.path.parent))
    holder = Holder(store.path, "writer")
    holders.append(holder)
    threading.Timer(1.0, holder.release).start()
    started = time.monotonic()
    status = main(["query", "select count(*) as n from lineage", "--format", "csv"])
    waited = time.monotonic() - started
    out, err = capsys.readouterr()
    assert holder.stop() == 0
    assert waited >= 0.9, "the query got in while the writer still held the file"
    assert (status, out.split(), err) == (0, ["n", "1"], "")
