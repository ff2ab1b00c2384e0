"""Instance profiles: where Dagster keeps runs, events and schedules, and how it queues runs.

* ``local`` (default): SQLite under ``$BIRDASSETS_HOME/dagster`` (package data ``dagster.yaml``). One machine,
  one user; at most 2 runs at once.
* ``production``: PostgreSQL at ``$BIRDASSETS_POSTGRES_URL`` (``dagster_production.yaml``): queued runs (4 at once),
  run retries and run monitoring; the webserver, the daemon, run workers and ``birdassets worker`` processes on
  several machines share one instance.

Both hold the pool ``duckdb`` (the steps that write the metrics database) to one step at a time and the pool
``accelerator`` (embeddings, supervised training, encoder training) to the number of GPUs. The profile is chosen
by ``--profile`` or ``BIRDASSETS_PROFILE``; :func:`prepare_instance` installs its file as
``$BIRDASSETS_HOME/dagster/dagster.yaml`` and points ``DAGSTER_HOME`` there.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

PROFILE_ENV = "BIRDASSETS_PROFILE"
POSTGRES_URL_ENV = "BIRDASSETS_POSTGRES_URL"
ACCELERATORS_ENV = "BIRDASSETS_ACCELERATORS"
"""Environment: the profile's name, PostgreSQL's URL (production) and the size of the ``accelerator`` pool."""

INSTANCE_CONFIG = "dagster.yaml"
"""The name Dagster reads under ``DAGSTER_HOME``."""

DUCKDB_POOL = "duckdb"
ACCELERATOR_POOL = "accelerator"
POSTGRES_CONNECT_TIMEOUT_S = 5


class ProfileError(ValueError):
    """An unknown profile, or one whose environment is incomplete or whose database cannot be reached."""


@dataclass(frozen=True)
class Profile:
    """An instance profile: its name, its ``dagster.yaml`` (package data of ``birdassets``) and whether that file
    keeps the instance in PostgreSQL (at ``$BIRDASSETS_POSTGRES_URL``)."""

    name: str
    config_resource: str
    postgres: bool = False

    def config_text(self) -> str:
        return resources.files("birdassets").joinpath(self.config_resource).read_text(encoding="utf-8")


PROFILES = {
    "local": Profile("local", "dagster.yaml"),
    "production": Profile("production", "dagster_production.yaml", postgres=True),
}


def chosen_profile(name: str | None = None) -> Profile:
    """``name``, else ``$BIRDASSETS_PROFILE``, else ``local``."""
    name = name or os.environ.get(PROFILE_ENV) or "local"
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r} ({PROFILE_ENV} or --profile); expected one of {tuple(PROFILES)}")
    return PROFILES[name]


def prepare_instance(settings, profile: str | None = None, *, pools: bool = True,
                     accelerators: int | None = None) -> Path:
    """Install the profile's ``dagster.yaml`` as ``$BIRDASSETS_HOME/dagster/dagster.yaml``, point ``DAGSTER_HOME``
    there (``BIRDASSETS_HOME`` and ``BIRDASSETS_PROFILE`` too, for child processes) and, with ``pools``, set the
    pool limits (what starts runs does; Celery workers, which only execute steps, leave them): the
    ``accelerator`` pool to ``accelerators`` slots (default :func:`accelerator_count`).

    Raises:
        ProfileError: an unknown profile, a variable it needs unset, PostgreSQL not answering.
    """
    from birdassets.atomic import write_text

    chosen = chosen_profile(profile)
    if chosen.postgres:
        url = os.environ.get(POSTGRES_URL_ENV)
        if not url:
            raise ProfileError(f"profile {chosen.name!r} needs {POSTGRES_URL_ENV} "
                               "(e.g. postgresql://user:password@host:5432/dagster)")
        check_postgres(url)
        os.environ[POSTGRES_URL_ENV] = with_driver(url)
    home = settings.layout.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config, target = chosen.config_text(), home / INSTANCE_CONFIG
    if not target.exists() or target.read_text(encoding="utf-8") != config:
        write_text(target, config)
    os.environ.update(DAGSTER_HOME=str(home), BIRDASSETS_HOME=str(settings.home), BIRDASSETS_PROFILE=chosen.name)
    if pools:
        set_pool_limits(accelerators or accelerator_count())
    return home


SQLALCHEMY_DRIVER = "postgresql+psycopg2"
"""The scheme Dagster's storage gets: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which
dagster-postgres does not install."""


def with_driver(url: str) -> str:
    """``url`` with the psycopg2 driver named (``postgresql://`` and ``postgres://`` -> :data:`SQLALCHEMY_DRIVER`)."""
    scheme, sep, rest = url.partition("://")
    return f"{SQLALCHEMY_DRIVER}://{rest}" if sep and scheme in ("postgresql", "postgres") else url


def check_postgres(url: str) -> None:
    """Raise a one-line ProfileError unless PostgreSQL at ``url`` accepts a connection (password hidden)."""
    try:
        import psycopg2
    except ImportError as error:
        raise ProfileError("the production profile needs dagster-postgres: pip install 'birdassets[production]'") \
            from error
    try:
        libpq_url = url.replace(SQLALCHEMY_DRIVER, "postgresql", 1)
        psycopg2.connect(libpq_url, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S).close()
    except psycopg2.Error as error:
        reason = " ".join(str(error).split())
        raise ProfileError(f"cannot connect to PostgreSQL at {POSTGRES_URL_ENV} ({redacted(url)}): {reason}") from error


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    scheme, _, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{place}"


def accelerator_count() -> int:
    """``$BIRDASSETS_ACCELERATORS``, else the NVIDIA GPUs this machine shows (``/dev/nvidia<N>``), at least 1."""
    return configured_accelerators() or max(1, visible_gpus())


def configured_accelerators() -> int | None:
    """``$BIRDASSETS_ACCELERATORS`` (None when unset).

    Raises:
        ProfileError: it is not a whole number >= 1.
    """
    value = os.environ.get(ACCELERATORS_ENV)
    if value is not None and (not value.isdigit() or int(value) < 1):
        raise ProfileError(f"{ACCELERATORS_ENV} must be a whole number >= 1, not {value!r}")
    return None if value is None else int(value)


def visible_gpus() -> int:
    """The NVIDIA GPUs this machine shows (``/dev/nvidia<N>``)."""
    return len(glob.glob("/dev/nvidia[0-9]*"))


def set_pool_limits(accelerators: int) -> None:
    """``duckdb`` = 1 writer and ``accelerator`` = ``accelerators`` steps, on the instance at ``DAGSTER_HOME``."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            return
        for pool, limit in ((DUCKDB_POOL, 1), (ACCELERATOR_POOL, accelerators)):
            storage.set_concurrency_slots(pool, limit)
