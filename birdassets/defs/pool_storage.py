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

import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as db
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

POOLS_LOCK_KEY = 0x62697264_706F6F6C
"""The advisory lock (a 64-bit key: ASCII ``birdpool``) every change to the pools holds."""


class SerialPoolsEventLogStorage(PostgresEventLogStorage):
    """:class:`PostgresEventLogStorage` whose pool changes (:data:`POOL_CHANGES`) are serialised by
    :data:`POOLS_LOCK_KEY`.

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
        """Hold :data:`POOLS_LOCK_KEY` while the block runs (re-entrant within a thread: freeing a slot assigns
        waiting steps)."""
        depth = getattr(self._held, "depth", 0)
        with nullcontext() if depth else self._advisory_lock():
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth = depth

    @contextmanager
    def _advisory_lock(self) -> Iterator[None]:
        """:data:`POOLS_LOCK_KEY`, taken (waiting for other processes) and released on a connection of its own."""
        with self._engine.connect() as lock:
            lock.execute(db.text("select pg_advisory_lock(:key)"), {"key": POOLS_LOCK_KEY})
            try:
                yield
            finally:
                lock.execute(db.text("select pg_advisory_unlock(:key)"), {"key": POOLS_LOCK_KEY})


POOL_CHANGES = ("claim_concurrency_slot", "free_concurrency_slot_for_step", "free_concurrency_slots_for_run",
                "assign_pending_steps", "set_concurrency_slots", "delete_concurrency_limit",
                "initialize_concurrency_limit_to_default")
"""The storage methods that change pools: each runs whole under :data:`POOLS_LOCK_KEY`."""


def _under_pools_lock(method: Callable) -> Callable:
    """``method`` of :class:`PostgresEventLogStorage`, run under :meth:`SerialPoolsEventLogStorage._pools_locked`."""
    @functools.wraps(method)
    def locked(self: SerialPoolsEventLogStorage, *args, **kwargs):
        with self._pools_locked():
            return method(self, *args, **kwargs)

    return locked


for _name in POOL_CHANGES:
    setattr(SerialPoolsEventLogStorage, _name, _under_pools_lock(getattr(PostgresEventLogStorage, _name)))
