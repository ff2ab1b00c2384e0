"""A wheel of birdassets works outside the source tree and installs the Dagster instance config it ships.

The wheel is built from a copy of the package (so the build leaves nothing in the working tree), installed with
``--no-deps`` into a fresh venv that sees this environment's packages (``--system-site-packages``), and its
console script runs from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import json

import duckdb
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGED_CONFIG = REPO / "birdassets" / "dagster.yaml"


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding birdassets from a freshly built wheel (and nothing else of its own)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "birdassets", source / "birdassets", ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "wheels", source)
    (wheel,) = (tmp / "wheels").glob("birdassets-*.whl")
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel)  # pip of the system site
    return tmp / "venv"


@pytest.fixture
def outside(tmp_path) -> dict:
    """``cwd`` and environment for a run outside the source tree, with a fresh ``BIRDASSETS_HOME``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "PYTHONPATH")}
    env["BIRDASSETS_HOME"] = str(tmp_path / "home")
    (tmp_path / "work").mkdir()
    return {"cwd": tmp_path / "work", "env": env}


def test_the_installed_package_comes_from_the_venv(venv, outside):
    where = run(venv / "bin" / "python", "-c", "import birdassets.cli; print(birdassets.cli.__file__)", **outside)
    path = Path(where.stdout.strip())
    assert path.is_relative_to(venv) and not path.is_relative_to(REPO), path


def test_help_and_query_from_outside_the_source_tree(venv, outside):
    done = run(venv / "bin" / "birdassets", "--help", **outside)
    assert done.stdout.startswith("usage: birdassets") and "query" in done.stdout and "bench" in done.stdout
    home = Path(outside["env"]["BIRDASSETS_HOME"])
    home.mkdir()
    duckdb.connect(str(home / "birdassets.duckdb")).close()  # an empty metrics database
    done = run(venv / "bin" / "birdassets", "query", "select 1 as answer", "--format", "json", **outside)
    assert json.loads(done.stdout) == [{"answer": 1}]


def test_prepare_instance_installs_the_packaged_config_with_nux_off(venv, outside):
    from dagster import DagsterInstance

    script = ("from birdassets.cli.pipeline import prepare_instance\nfrom birdassets.settings import load_settings\n"
              "print(prepare_instance(load_settings()))")
    dagster_home = Path(run(venv / "bin" / "python", "-c", script, **outside).stdout.strip())
    assert dagster_home == Path(outside["env"]["BIRDASSETS_HOME"]) / "dagster"
    installed = (dagster_home / "dagster.yaml").read_text()
    assert installed == PACKAGED_CONFIG.read_text()
    assert yaml.safe_load(installed)["nux"] == {"enabled": False}
    with DagsterInstance.from_config(str(dagster_home)) as instance:  # Dagster reads it: no newsletter modal
        assert instance.nux_enabled is False


def test_the_root_dagster_yaml_is_the_packaged_one():
    root = REPO / "dagster.yaml"
    assert root.read_text() == PACKAGED_CONFIG.read_text()
    assert not root.is_symlink() or root.resolve() == PACKAGED_CONFIG.resolve()
