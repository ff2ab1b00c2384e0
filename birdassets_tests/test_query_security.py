"""`birdassets query` is read-only for real: no file written, no other file read, one statement, bounded output.

Every case runs the real command (``birdassets.cli.main`` in-process, or ``python -m birdassets.cli`` where
memory is measured) against a real DuckDB file written by the store's own writers, and checks afterwards that
what a refused statement aimed at is byte-identical / still has its rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from birdassets.cli import main
from birdassets.layout import Layout
from birdassets.store import MetricsStore
from birdassets.store.connection import open_connection
from birdassets_tests.test_store import make_record, snapshot

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """BIRDASSETS_HOME with a metrics database (one evaluation), a manifest and a second DuckDB file."""
    home = tmp_path / "home"
    monkeypatch.setenv("BIRDASSETS_HOME", str(home))
    MetricsStore(Layout(home).db_path).record_evaluation(make_record())
    manifest = Layout(home).manifest_path("demo-clear")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": ["a.wav", "b.wav"], "label": ["amerob", "norcar"]}).to_parquet(manifest)
    with duckdb.connect(str(tmp_path / "other.duckdb")) as other:
        other.execute("CREATE TABLE precious AS SELECT range AS id FROM range(3)")
    (tmp_path / "notes.txt").write_text("keep me\n")
    return home


def query(capsys, *args: str) -> tuple[int, str, str]:
    """``birdassets query ARGS``: (exit status, stdout, stderr)."""
    status = main(["query", *args])
    out, err = capsys.readouterr()
    return status, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(status: int, out: str, err: str, *words: str) -> None:
    """Exit 2, nothing on stdout, ONE line on stderr containing each of ``words``."""
    assert status == 2, (out, err)
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("birdassets query: ")
    for word in words:
        assert word.lower() in err.lower(), err


def test_copy_to_cannot_replace_a_manifest(home, capsys):
    manifest = Layout(home).manifest_path("demo-clear")
    before = digest(manifest)
    status, out, err = query(
        capsys, f"copy (select 'junk' as path) to '{manifest}' (format parquet)"
    )
    assert_refused(status, out, err, "COPY statements are refused", "read-only")
    assert digest(manifest) == before
    assert pd.read_parquet(manifest)["path"].tolist() == ["a.wav", "b.wav"]


@pytest.mark.parametrize("target", ["notes.txt", "new.csv"])
def test_copy_to_writes_no_file_anywhere(home, capsys, tmp_path, target):
    path = tmp_path / target
    before = path.read_bytes() if path.exists() else None
    status, out, err = query(capsys, f"copy scores to '{path}' (header)")
    assert_refused(status, out, err, "COPY")
    assert (path.read_bytes() if path.exists() else None) == before


def test_export_database_dumps_nothing(home, capsys, tmp_path):
    status, out, err = query(capsys, f"export database '{tmp_path / 'dump'}'")
    assert_refused(status, out, err, "EXPORT statements are refused")
    assert not (tmp_path / "dump").exists()


@pytest.mark.parametrize(
    "sql",
    [
        "attach '{other}' as o (READ_WRITE); delete from o.precious",
        "attach '{other}' as o (READ_WRITE)",
    ],
)
def test_attach_cannot_delete_rows_of_another_database(home, capsys, tmp_path, sql):
    other = tmp_path / "other.duckdb"
    before = digest(other)
    status, out, err = query(capsys, sql.format(other=other))
    assert_refused(status, out, err, "2 statements given" if ";" in sql else "ATTACH statements are refused")
    assert digest(other) == before
    with duckdb.connect(str(other), read_only=True) as con:
        assert con.execute("select count(*) from precious").fetchone() == (3,)


@pytest.mark.parametrize(
    "reader",
    [
        "read_text('/etc/passwd')",
        "read_csv('/etc/passwd', header=false)",
        "glob('/etc/*')",
        "read_parquet('{manifest}')",
    ],
)
def test_a_select_cannot_read_other_files(home, capsys, reader):
    """These are SELECTs, so the statement check lets them through: the connection itself refuses."""
    manifest = Layout(home).manifest_path("demo-clear")
    status, out, err = query(capsys, f"select * from {reader.format(manifest=manifest)}")
    assert_refused(status, out, err, "Permission Error", "file system operations are disabled")
    assert "root:" not in out + err and "a.wav" not in out + err


def test_the_guard_holds_below_the_statement_check(home, tmp_path):
    """A read-only connection of the store, given a COPY/ATTACH/SET directly, refuses them too."""
    con = open_connection(Layout(home).db_path, read_only=True, lock_timeout_s=5)
    try:
        for sql in [
            f"copy scores to '{tmp_path / 'leak.csv'}'",
            f"attach '{tmp_path / 'other.duckdb'}' as o",
            "install httpfs",
        ]:
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
            con.execute("set enable_external_access = true")
    finally:
        con.close()
    assert not (tmp_path / "leak.csv").exists()


def test_the_query_connection_runs_locked_without_external_access_or_progress_bar(home, capsys):
    status, out, err = query(
        capsys, "select name, value from duckdb_settings() where name in "
        "('enable_external_access', 'lock_configuration', 'enable_progress_bar') order by name", "--format", "csv",
    )
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "name,value", "enable_external_access,false", "enable_progress_bar,false", "lock_configuration,true",
    ]


@pytest.mark.parametrize("sql", ["", "   \n\t", "-- only a comment", "/* nothing */", ";", " ; ; "])
def test_empty_sql_is_a_clear_error(home, capsys, sql):
    status, out, err = query(capsys, sql)
    assert_refused(status, out, err, "no SQL statement given")


def test_two_statements_are_refused_saying_so(home, capsys):
    status, out, err = query(capsys, "select 1 as a; select 2 as b")
    assert_refused(status, out, err, "2 statements given", "one statement per call")


def test_writes_to_the_metrics_database_are_refused_and_change_nothing(home, capsys):
    store = MetricsStore(Layout(home).db_path)
    before, db_before = snapshot(store), digest(store.path)
    for sql, kind in [("delete from scores", "DELETE"), ("drop table lineage", "DROP"),
                      ("update scores set value = 0", "UPDATE"), ("set memory_limit = '1GB'", "SET"),
                      ("create table t as select 1", "CREATE"), ("checkpoint; delete from runs", "2 statements")]:
        status, out, err = query(capsys, sql)
        assert_refused(status, out, err, kind)
    assert digest(store.path) == db_before
    after = snapshot(store)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(after[table], frame, obj=table)


def test_the_views_work_under_the_guard(home, capsys):
    record = make_record()
    status, out, err = query(
        capsys, "select split, metric, mean, n_folds from leaderboard where probe = 'linear' "
        "and split = 'test' and metric = 'cmAP'", "--format", "json",
    )
    assert (status, err) == (0, "")
    (row,) = json.loads(out)
    scores = record.scores
    expected = scores[(scores.split == "test") & (scores.metric == "cmAP")]["value"].mean()
    assert row["mean"] == pytest.approx(expected, abs=1e-12) and row["n_folds"] == 5
    for view in ("score_by_step", "latest_lineage"):
        status, out, err = query(capsys, f"select count(*) as n from {view}", "--format", "csv")
        assert (status, err) == (0, "") and int(out.splitlines()[1]) > 0, view


def test_a_huge_result_is_cut_at_the_limit_and_says_so(home, capsys):
    started = time.perf_counter()
    status, out, err = query(capsys, "select * from range(20000000)")
    assert time.perf_counter() - started < 30  # 20 M rows are never fetched, let alone printed
    assert status == 0
    lines = out.splitlines()
    assert lines[-1] == "(10000 rows)" and lines[-2].strip() == "9999" and len(lines) == 2 + 10000 + 1
    assert err.strip() == (
        "birdassets query: printed the first 10000 rows; the result has more (--limit N for more, --limit 0 for all)"
    )


@pytest.mark.parametrize("limit, cut", [(5, True), (9, True), (10, False), (11, False), (0, False)])
def test_limit_boundaries(home, capsys, limit, cut):
    status, out, err = query(capsys, "select * from range(10)", "--format", "csv", "--limit", str(limit))
    shown = min(limit or 10, 10)
    assert status == 0
    assert out.splitlines() == ["range", *map(str, range(shown))]
    assert ("printed the first" in err) is cut


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_result_of_several_chunks_streams_whole(home, capsys, fmt):
    from birdassets.store.reads import CHUNK_ROWS

    n = 2 * CHUNK_ROWS + 123  # three chunks, the last one short; later ids are wider
    sql = f"select range as id, 'r' || range as name, range / 7 as x from range({n})"
    status, out, err = query(capsys, sql, "--format", fmt, "--limit", "0")
    assert (status, err) == (0, "")
    if fmt == "json":
        frame = pd.DataFrame(json.loads(out))
    elif fmt == "csv":
        frame = pd.read_csv(io.StringIO(out))
    else:
        lines = out.splitlines()
        assert lines[-1] == f"({n} rows)"
        assert lines[-2].split() == [str(n - 1), f"r{n - 1}", f"{(n - 1) / 7:.4f}"]
        frame = pd.DataFrame([line.split() for line in lines[2:-1]], columns=lines[0].split()).astype({"id": int})
    assert frame["id"].tolist() == list(range(n))
    if fmt != "table":
        np.testing.assert_allclose(frame["x"].to_numpy(), np.arange(n) / 7, rtol=1e-15)


def test_an_error_in_the_middle_of_a_stream_is_reported(home, capsys):
    from birdassets.store.reads import CHUNK_ROWS

    sql = (f"select case when range = {CHUNK_ROWS + 5} then error('planted failure') else range end as v "
           f"from range({3 * CHUNK_ROWS})")
    status, out, err = query(capsys, sql, "--limit", "0", "--format", "csv")
    assert status == 2
    assert "planted failure" in err and len(err.strip().splitlines()) == 1


MEMORY_PROBE = textwrap.dedent(
    """
    import re, sys
    from birdassets.cli import main
    status = main(["query", sys.argv[1], "--format", "csv", "--limit", "0"])
    sys.stdout.flush()
    # VmHWM: this process image's own peak (ru_maxrss would also count the forking parent's pages at exec)
    peak_kb = int(re.search(r"VmHWM:\s*(\d+) kB", open("/proc/self/status").read()).group(1))
    print(f"peak_rss_mb={peak_kb / 1024:.0f}", file=sys.stderr)
    sys.exit(status)
    """
)


def test_an_unlimited_csv_streams_to_the_end_in_bounded_memory(home):
    """~105 MB of CSV (500k rows of 200 characters) pass through a process whose peak RSS stays far below what
    holding it takes (about 600 MB on 022c4fb, which built the whole frame and the whole CSV text first)."""
    n = 500_000
    sql = f"select range as i, repeat('x', 200) as pad from range({n})"
    env = {**os.environ, "BIRDASSETS_HOME": str(home), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", MEMORY_PROBE, sql], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=REPO)
    rows, last, size, odd = 0, b"", 0, []
    for line in child.stdout:
        rows, last, size = rows + 1, line, size + len(line)
        if rows > 1 and not line.endswith(b"x" * 200 + b"\n"):
            odd.append(line[:80])
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=300) == 0, stderr
    assert odd == []
    assert rows == n + 1 and last == f"{n - 1},{'x' * 200}\n".encode()
    peak_mb = int(stderr.rsplit("peak_rss_mb=", 1)[1])
    assert size > 100e6
    assert peak_mb < 400, f"peak RSS {peak_mb} MB for a {size / 1e6:.0f} MB result"
