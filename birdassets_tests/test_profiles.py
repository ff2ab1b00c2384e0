"""Instance profiles and executors: what each profile installs, and the one-line errors of a profile that cannot
start (no PostgreSQL URL, PostgreSQL not answering, an unknown profile, a worker without the celery executor)."""

from __future__ import annotations

import dagster as dg
import pytest

from birdassets.defs.executors import executor_for
from birdassets.defs.profiles import (
    ProfileError, accelerator_count, chosen_profile, prepare_instance, redacted, with_driver,
)
from birdassets.execution import ExecutionConfig
from birdassets.settings import load_settings
from birdassets_tests.conftest import birdassets
from birdassets_tests.ui_server import free_port


def test_production_config_names_postgres_queue_retries_and_monitoring():
    text = chosen_profile("production").config_text()
    for line in ("postgres_url:", "env: BIRDASSETS_POSTGRES_URL", "class: QueuedRunCoordinator",
                 "max_concurrent_runs: 4", "max_retries: 2", "free_slots_after_run_end_seconds: 300"):
        assert line in text, line
    assert "postgres" not in chosen_profile("local").config_text()


def test_the_profile_comes_from_the_flag_then_the_environment(monkeypatch):
    monkeypatch.setenv("BIRDASSETS_PROFILE", "production")
    assert chosen_profile().name == "production" and chosen_profile("local").name == "local"
    monkeypatch.delenv("BIRDASSETS_PROFILE")
    assert chosen_profile().name == "local"
    with pytest.raises(ProfileError, match="unknown profile 'prod'"):
        chosen_profile("prod")


def test_local_profile_installs_sqlite_instance_with_pool_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDASSETS_ACCELERATORS", "3")
    home = prepare_instance(load_settings(tmp_path), "local")
    assert home == tmp_path / "dagster" and (home / "dagster.yaml").read_text().startswith("# Dagster instance")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        limits = {key: instance.event_log_storage.get_concurrency_info(key).slot_count
                  for key in ("duckdb", "accelerator")}
    assert limits == {"duckdb": 1, "accelerator": 3}
    prepare_instance(load_settings(tmp_path), "local", accelerators=2)  # what the demo asks for without a GPU
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("accelerator").slot_count == 2


def test_urls_get_the_psycopg2_driver_and_lose_their_password():
    assert with_driver("postgresql://u:p@h:5432/d") == "postgresql+psycopg2://u:p@h:5432/d"
    assert with_driver("postgres://h/d") == "postgresql+psycopg2://h/d"
    assert with_driver("postgresql+psycopg2://h/d") == "postgresql+psycopg2://h/d"
    assert redacted("postgresql://dagster:s3cret@db:5432/d") == "postgresql://dagster:***@db:5432/d"
    assert redacted("postgresql://dagster@db/d") == "postgresql://dagster@db/d"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_accelerators_must_be_a_positive_count(monkeypatch, value):
    monkeypatch.setenv("BIRDASSETS_ACCELERATORS", value)
    with pytest.raises(ProfileError, match="BIRDASSETS_ACCELERATORS must be a whole number >= 1"):
        accelerator_count()


def test_executor_follows_the_setting():
    assert executor_for(ExecutionConfig()) is dg.in_process_executor
    multiprocess = executor_for(ExecutionConfig("multiprocess", max_concurrent_steps=3))
    assert multiprocess.name == "multiprocess" and multiprocess is not dg.multiprocess_executor  # configured
    celery = executor_for(ExecutionConfig("celery", celery_broker="pyamqp://guest@broker:5672//"))
    assert celery.name == "celery"


def test_production_without_or_with_an_unreachable_postgres_is_one_line(tmp_path, monkeypatch):
    missing = birdassets(tmp_path, "ui", "--profile", "production", "--port", str(free_port()))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "profile 'production' needs BIRDASSETS_POSTGRES_URL" in missing.stderr

    monkeypatch.setenv("BIRDASSETS_POSTGRES_URL", f"postgresql://dagster:s3cret@127.0.0.1:{free_port()}/dagster")
    closed = birdassets(tmp_path, "ui", "--profile", "production", "--port", str(free_port()))
    assert closed.returncode == 2 and closed.stderr.count("\n") == 1, closed.stderr
    assert "cannot connect to PostgreSQL at BIRDASSETS_POSTGRES_URL (postgresql://dagster:***@127.0.0.1" in closed.stderr
    assert "s3cret" not in closed.stderr


def test_a_worker_needs_the_celery_executor(tmp_path):
    done = birdassets(tmp_path, "worker")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "executor is 'in_process'" in done.stderr and 'executor = "celery"' in done.stderr
