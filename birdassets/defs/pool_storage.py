"""The production profile's event log: Dagster's PostgreSQL storage, with pool slots claimed and freed one change
at a time across every process that shares the instance.

Dagster's PostgreSQL storage runs each statement in its own transaction (autocommit). A claim reads "a slot is
free", then marks a pending step assigned, then takes a slot row, each in a statement of its own, so two run
workers claiming at the same moment can both be assigned and both take the one slot of a pool of 1: measured on a
real PostgreSQL, 6 runs claiming a 1-slot pool at once got 2 or 3 slots in 8 rounds out of 30. Here every change
to the pools (claim, free, set a limit, assign waiting steps) holds one PostgreSQL advisory lock for its whole
read-check-write sequence, so the ``duckdb`` pool really lets one writer run at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster._core.storage.event_log.base import ConcurrencyClaimStatus
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

POOLS_LOCK_KEY = 0x62697264_706F6F6C
"""The advisory lock (a 64-bit key: ASCII ``birdpool``) every change to the pools holds."""


class SerialPoolsEventLogStorage(PostgresEventLogStorage):
    """:class:`PostgresEventLogStorage` whose pool changes are serialised by :data:`POOLS_LOCK_KEY`.

    Configured in ``dagster_production.yaml`` as ``event_log_storage`` (module ``birdassets.defs.pool_storage``),
    with the same ``postgres_url`` as the run and schedule storages.
    """

    _held = threading.local()

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]) -> SerialPoolsEventLogStorage:
        return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   token_provider=get_token_provider_from_config(config_value))

    @contextmanager
    def _pools_locked(self) -> Iterator[None]:
        """Hold :data:`POOLS_LOCK_KEY` on a connection of its own (re-entrant within a thread: freeing a slot
        assigns waiting steps)."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        with self._engine.connect() as lock:
            lock.execute(db.text("select pg_advisory_lock(:key)"), {"key": POOLS_LOCK_KEY})
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                lock.execute(db.text("select pg_advisory_unlock(:key)"), {"key": POOLS_LOCK_KEY})

    def claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str,
                               priority: int | None = None) -> ConcurrencyClaimStatus:
        with self._pools_locked():
            return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)

    def free_concurrency_slot_for_step(self, run_id: str, step_key: str) -> None:
        with self._pools_locked():
            super().free_concurrency_slot_for_step(run_id, step_key)

    def free_concurrency_slots_for_run(self, run_id: str) -> None:
        with self._pools_locked():
            super().free_concurrency_slots_for_run(run_id)

    def assign_pending_steps(self, concurrency_keys: Sequence[str]) -> None:
        with self._pools_locked():
            super().assign_pending_steps(concurrency_keys)

    def set_concurrency_slots(self, concurrency_key: str, num: int) -> None:
        with self._pools_locked():
            super().set_concurrency_slots(concurrency_key, num)

    def delete_concurrency_limit(self, concurrency_key: str) -> None:
        with self._pools_locked():
            super().delete_concurrency_limit(concurrency_key)

    def initialize_concurrency_limit_to_default(self, concurrency_key: str) -> bool:
        with self._pools_locked():
            return super().initialize_concurrency_limit_to_default(concurrency_key)
