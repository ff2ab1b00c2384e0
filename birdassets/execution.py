"""How the steps of a run execute: the executor chosen in ``birdassets.toml``, Dagster-free.

* ``in_process`` (default): every step of a run in the run's own process. TensorFlow and JAX are imported and
  functions compiled once per run; a GPU is held by one process.
* ``multiprocess``: a process per step, at most ``max_concurrent_steps`` at once (steps of one run in parallel).
* ``celery``: every step is a Celery task on the broker ``celery_broker``, executed by ``birdassets worker``
  processes on any machine that shares ``BIRDASSETS_HOME`` (use it with the ``production`` instance profile).

A Celery step is acknowledged only when it finished (:data:`CELERY_APP_SETTINGS`): when the worker running it
dies, the broker hands the step to another worker, which runs it again from the start. Every step writes its
outputs atomically and replaces its DuckDB rows, so a step run twice lands once.
"""

from __future__ import annotations

from dataclasses import dataclass

EXECUTORS = ("in_process", "multiprocess", "celery")
"""The executors ``executor`` may name."""

DEFAULT_BROKER = "pyamqp://guest@localhost:5672//"
"""RabbitMQ on this machine with its default account: the broker ``dagster-celery`` expects by default."""

DEFAULT_BACKEND = "rpc://"
"""Results travel back over the broker to the run that submitted the step."""

CELERY_QUEUE = "dagster"
"""The queue ``dagster-celery`` routes steps to."""

CELERY_APP_SETTINGS = {
    "task_acks_late": True,  # a step leaves the queue when it finished, not when a worker took it ...
    "task_reject_on_worker_lost": True,  # ... so a dead worker's step goes back to the queue
    "worker_prefetch_multiplier": 1,  # a busy worker holds no second step another worker could run
    "broker_connection_retry_on_startup": True,
}
"""Celery settings of the executor and of every worker (they must agree)."""


class ExecutionError(ValueError):
    """An invalid execution setting."""


@dataclass(frozen=True)
class ExecutionConfig:
    """The executor of every job and its settings.

    Attributes:
        executor: one of :data:`EXECUTORS`.
        max_concurrent_steps: ``multiprocess``: steps of one run at once (>= 1).
        celery_broker: ``celery``: the broker URL (``pyamqp://user:password@host:5672//``, ``redis://host:6379/0``).
        celery_backend: ``celery``: where results go (:data:`DEFAULT_BACKEND`).
    """

    executor: str = "in_process"
    max_concurrent_steps: int = 2
    celery_broker: str = DEFAULT_BROKER
    celery_backend: str = DEFAULT_BACKEND

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ExecutionError(f"executor {self.executor!r} is not one of {EXECUTORS}")
        if self.max_concurrent_steps < 1:
            raise ExecutionError(f"max_concurrent_steps must be >= 1, not {self.max_concurrent_steps}")
        if "://" not in self.celery_broker or "://" not in self.celery_backend:
            raise ExecutionError("celery_broker and celery_backend must be URLs such as "
                                 f"{DEFAULT_BROKER!r} and {DEFAULT_BACKEND!r}")

    def celery_config(self) -> dict:
        """The ``celery`` executor's config (``broker``, ``backend``, ``config_source``): the executor and
        ``birdassets worker`` build their Celery apps from it alike."""
        return {"broker": self.celery_broker, "backend": self.celery_backend, "config_source": dict(CELERY_APP_SETTINGS)}
