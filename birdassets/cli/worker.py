"""``birdassets worker [--name NAME] [--profile P]``: a Celery worker that executes the steps of runs (executor
``celery`` in ``birdassets.toml``).

One worker executes one step at a time in its own process (Celery's ``solo`` pool: TensorFlow and JAX are imported
once, nothing is forked after they start threads); start one per core or per GPU, on any machine that shares
``BIRDASSETS_HOME`` and reaches the broker and PostgreSQL. A step leaves the queue only when it finished, so the
steps of a worker that dies go to the others (:data:`~birdassets.execution.CELERY_APP_SETTINGS`). SIGTERM lets
the running step finish; a second SIGTERM, or SIGINT twice, stops at once.
"""

from __future__ import annotations

import argparse
import socket

from birdassets.cli.errors import UserError
from birdassets.cli.ui import add_profile_option


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``worker``."""
    worker = commands.add_parser("worker", help="execute the steps of runs from the Celery broker (executor celery)")
    worker.add_argument("--name", default=None,
                        help="the worker's name in the run logs (default: birdassets-<process id>), @<host> added")
    add_profile_option(worker)
    worker.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    import importlib
    import os

    from birdassets.defs.executors import celery_worker_app
    from birdassets.defs.profiles import prepare_instance, redacted
    from birdassets.execution import CELERY_QUEUE
    from birdassets.settings import load_settings

    settings = load_settings()
    if settings.execution.executor != "celery":
        raise UserError(f"executor is {settings.execution.executor!r} in {settings.layout.config_file}; workers serve "
                        "executor = \"celery\" (set it there, with celery_broker)")
    prepare_instance(settings, args.profile, pools=False)
    importlib.import_module("birdassets.definitions")  # TensorFlow, JAX and the definitions, once, before any step

    name = f"{args.name or f'birdassets-{os.getpid()}'}@{socket.gethostname()}"
    print(f"birdassets worker: {name} takes steps from {redacted(settings.execution.celery_broker)} "
          f"(profile {os.environ['BIRDASSETS_PROFILE']}, BIRDASSETS_HOME={settings.home})", flush=True)
    app = celery_worker_app(settings.execution)
    app.worker_main(["worker", "--pool=solo", f"--hostname={name}", f"--queues={CELERY_QUEUE}", "--loglevel=INFO",
                     "--without-gossip", "--without-mingle"])
    return 0
