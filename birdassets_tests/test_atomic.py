"""The one atomic-write helper: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from birdassets.atomic import FILE_MODE, atomic_dir, atomic_path, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_the_published_file_has_the_usual_mode_and_keeps_its_suffix(tmp_path):
    with atomic_path(tmp_path / "sub" / "t.parquet") as tmp:
        assert tmp.suffix == ".parquet" and tmp.parent == tmp_path / "sub"
        tmp.write_bytes(b"x")
    assert stat.S_IMODE(os.stat(tmp_path / "sub" / "t.parquet").st_mode) == FILE_MODE


def test_json_refuses_nan_instead_of_writing_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"v": float("nan")})
    assert not (tmp_path / "x.json").exists()
    assert json.loads(write_json(tmp_path / "y.json", {"v": 1.5}).read_text()) == {"v": 1.5}


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "probes"
    with atomic_dir(target) as staging:
        (staging / "a.npy").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as staging:
            (staging / "b.npy").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probes"]  # no staging folder left behind
    with atomic_dir(target) as staging:
        (staging / "c.npy").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.npy"]


def test_a_killed_writer_leaves_the_previous_version(tmp_path):
    """SIGKILL while the new content is being written: the target still holds the old content whole."""
    target = write_text(tmp_path / "scores.json", "old")
    script = textwrap.dedent(f"""
        import os, signal
        from birdassets.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -9
    assert target.read_text() == "old"


def test_a_content_addressed_folder_built_twice_keeps_the_first(tmp_path):
    """replace=False (mel datasets): a build that finishes second leaves the first one in place, untouched."""
    target = tmp_path / "mel-abc"
    with atomic_dir(target, replace=False) as first, atomic_dir(target, replace=False) as second:
        assert first != second  # each writer stages in a folder of its own
        (first / "x").write_text("first")
        (second / "x").write_text("second")
    assert (target / "x").read_text() == "second"  # the inner block finished first and was published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mel-abc"]
