"""The code location's executor, chosen by ``executor`` in ``birdassets.toml``
(:class:`~birdassets.execution.ExecutionConfig`), and the Celery app its workers serve."""

from __future__ import annotations

import dagster as dg

from birdassets.execution import ExecutionConfig


def executor_for(execution: ExecutionConfig) -> dg.ExecutorDefinition:
    """``in_process``: one process per run (TensorFlow/JAX imported and functions compiled once, a GPU held by one
    process); ``multiprocess``: a process per step; ``celery``: a Celery task per step (``birdassets worker``)."""
    if execution.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": execution.max_concurrent_steps})
    if execution.executor == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(execution.celery_config())
    return dg.in_process_executor


def celery_worker_app(execution: ExecutionConfig):
    """The Celery app of ``birdassets worker``: the executor's broker, backend and settings, and the task that
    executes one step of a run."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    app = make_app(CeleryExecutor.for_cli(**execution.celery_config()).app_args())
    create_task(app)
    return app
