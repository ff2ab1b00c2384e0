"""Pools on a real PostgreSQL: the production profile's event log gives a pool's slots to no more steps than it has,
however many runs claim at the same moment (Dagster's own PostgreSQL storage gave a 1-slot pool to 2 or 3 of 6
simultaneous claims in 8 rounds out of 30), and a freed slot goes to exactly one waiting step.

Needs the Debian package ``postgresql`` (``.ci/run`` installs it): skipped with the reason where it is missing,
except under ``CI``, where its absence fails the test.
"""

from __future__ import annotations

import os
import threading

import dagster as dg
import pytest

from birdassets.defs.pool_storage import SerialPoolsEventLogStorage
from birdassets.defs.profiles import prepare_instance, with_driver
from birdassets.settings import load_settings
from birdassets_tests.services import missing_services, postgres

pytestmark = pytest.mark.slow
CLAIMANTS = 8
ROUNDS = 25


@pytest.fixture(scope="module")
def database() -> str:
    """The URL of a PostgreSQL server started for this module (psycopg2 driver named)."""
    reason = missing_services()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test pools on PostgreSQL; it {reason}")
        pytest.skip(f"pools on PostgreSQL: the test {reason}")
    with postgres() as url:
        yield with_driver(url)


def claim_at_once(storage, pool: str, runs: list[str]) -> list[str]:
    """Every run in ``runs`` claims a slot of ``pool`` for its step ``write`` at the same moment (one thread, and
    so one PostgreSQL connection, each); the runs that got one."""
    barrier, claimed = threading.Barrier(len(runs)), []

    def claim(run_id: str) -> None:
        barrier.wait()
        if storage.claim_concurrency_slot(pool, run_id, "write").is_claimed:
            claimed.append(run_id)

    threads = [threading.Thread(target=claim, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return claimed


def test_the_production_instance_keeps_its_event_log_in_the_serial_pools_storage(tmp_path, database, monkeypatch):
    for name in ("DAGSTER_HOME", "BIRDASSETS_HOME", "BIRDASSETS_PROFILE"):
        monkeypatch.setenv(name, "")  # prepare_instance sets them; put back after the test
    monkeypatch.setenv("BIRDASSETS_POSTGRES_URL", database)
    monkeypatch.setenv("BIRDASSETS_ACCELERATORS", "2")
    home = prepare_instance(load_settings(tmp_path), "production")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert type(storage) is SerialPoolsEventLogStorage
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert storage.get_concurrency_info("duckdb").slot_count == 1
        assert storage.get_concurrency_info("accelerator").slot_count == 2


def test_a_one_slot_pool_goes_to_one_of_many_runs_claiming_at_once(database):
    storage = SerialPoolsEventLogStorage(database)
    runs = [f"run-{i}" for i in range(CLAIMANTS)]
    winners = []
    for round_ in range(ROUNDS):
        pool = f"writers-{round_}"
        storage.set_concurrency_slots(pool, 1)
        winners.append(len(claim_at_once(storage, pool, runs)))
    assert winners == [1] * ROUNDS


def test_a_freed_slot_goes_to_exactly_one_waiting_step(database):
    storage = SerialPoolsEventLogStorage(database)
    storage.set_concurrency_slots("handover", 2)
    runs = [f"run-{i}" for i in range(CLAIMANTS)]
    holders = claim_at_once(storage, "handover", runs)
    assert len(holders) == 2
    waiting = [run_id for run_id in runs if run_id not in holders]
    for _ in range(3):  # the waiting runs poll again: nothing is free
        assert claim_at_once(storage, "handover", waiting) == []
    storage.free_concurrency_slot_for_step(holders[0], "write")
    (successor,) = claim_at_once(storage, "handover", waiting)
    assert successor in waiting
    assert storage.get_concurrency_info("handover").active_slot_count == 2


def advisory_locks(url: str) -> int:
    """Advisory locks held on the server right now, by any session."""
    import sqlalchemy as db

    engine = db.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(db.text("select count(*) from pg_locks where locktype = 'advisory' "
                                              "and granted")).scalar_one()
    finally:
        engine.dispose()


def test_every_pool_change_takes_the_lock_again_and_leaves_it_free(database):
    storage = SerialPoolsEventLogStorage(database)
    storage.set_concurrency_slots("nested", 1)
    assert storage.claim_concurrency_slot("nested", "run-a", "write").is_claimed
    storage.claim_concurrency_slot("nested", "run-b", "write")  # waits for the slot
    storage.free_concurrency_slot_for_step("run-a", "write")  # frees, then assigns run-b: the lock taken twice
    assert advisory_locks(database) == 0
    with storage._pools_locked():  # the thread's next change takes the lock again
        assert advisory_locks(database) == 1
    assert advisory_locks(database) == 0
    assert storage.claim_concurrency_slot("nested", "run-b", "write").is_claimed
