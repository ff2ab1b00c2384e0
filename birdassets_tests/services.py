"""Real PostgreSQL and RabbitMQ servers for the production-profile tests, each in a private folder on free ports
(the Debian packages ``postgresql`` and ``rabbitmq-server``; ``.ci/run`` installs them).

PostgreSQL refuses to run as root: as root, its files belong to the ``postgres`` user and it runs as that user.
RabbitMQ gets its own node name, ports, Erlang port mapper and cookie, so it never meets a system broker.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from birdassets.supervisor import Supervisor
from birdassets_tests.ui_server import free_port

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
POSTGRES_BIN = "/usr/lib/postgresql/*/bin"
START_S = 90.0
DATABASE = "dagster"


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``postgres`` (the newest installed major version), or None."""
    found = sorted(glob.glob(POSTGRES_BIN), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    return Path(found[-1]) if found else None


def missing_services() -> str | None:
    """Why the servers cannot start here (a missing Debian package), or None."""
    missing = [name for name, there in (("postgresql", postgres_bin() is not None),
                                        ("rabbitmq-server", os.path.exists(RABBITMQ_SERVER))) if not there]
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (util-linux)")
    return f"needs the Debian packages {', '.join(missing)}" if missing else None


def wait_until(ready, what: str, process: subprocess.Popen, log: Path, seconds: float = START_S) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {seconds:.0f} s:\n{tail(log)}")
        time.sleep(0.2)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server with an empty database :data:`DATABASE`; yields its URL (user ``birdassets``, trust
    authentication on loopback). Its folder is its own under the system's temporary folder (as root it belongs
    to ``postgres``, who could not reach a folder inside pytest's private ones)."""
    import psycopg2

    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="birdassets-postgres-") as scratch:
        folder, port = Path(scratch), free_port()
        if as_user:
            shutil.chown(folder, "postgres")
        binaries, log = postgres_bin(), folder / "postgres.log"
        subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(folder / "data"), "-U", "birdassets",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
        url = f"postgresql://birdassets@127.0.0.1:{port}"
        with Supervisor() as servers, open(log, "wb") as out:  # leaving stops the server (SIGTERM, then SIGKILL)
            server = servers.start("PostgreSQL", [*as_user, str(binaries / "postgres"), "-D", str(folder / "data"),
                                                  "-p", str(port), "-k", str(folder), "-c", "listen_addresses=127.0.0.1",
                                                  "-c", "fsync=off", "-c", "max_connections=200"],
                                   stdout=out, stderr=subprocess.STDOUT)
            wait_until(lambda: connects(f"{url}/postgres"), "PostgreSQL", server.process, log)
            connection = psycopg2.connect(f"{url}/postgres")
            connection.autocommit = True  # CREATE DATABASE runs outside a transaction
            connection.cursor().execute(f"create database {DATABASE}")
            connection.close()
            yield f"{url}/{DATABASE}"


def connects(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=1).close()
    except psycopg2.OperationalError:
        return False
    return True


@contextmanager
def rabbitmq(folder: Path) -> Iterator[str]:
    """A RabbitMQ broker on loopback; yields its Celery URL (``pyamqp://guest@127.0.0.1:<port>//``)."""
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "rabbitmq.log"
    (folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n")
    (folder / "enabled_plugins").write_text("[].\n")
    env = {**os.environ, "HOME": str(folder), "RABBITMQ_NODENAME": f"birdassets{port}@localhost",
           "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_DIST_PORT": str(free_port()), "ERL_EPMD_PORT": str(free_port()),
           "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"), "RABBITMQ_LOG_BASE": str(folder / "log"),
           "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"), "RABBITMQ_PID_FILE": str(folder / "pid")}
    try:
        with Supervisor() as servers, open(log, "wb") as out:  # leaving stops the broker (SIGTERM, then SIGKILL)
            server = servers.start("RabbitMQ", [RABBITMQ_SERVER], env=env, stdout=out, stderr=subprocess.STDOUT)
            wait_until(lambda: amqp_answers(port), "RabbitMQ", server.process, log)
            yield f"pyamqp://guest@127.0.0.1:{port}//"
    finally:  # the broker's Erlang port mapper left the group: stop it by its port
        subprocess.run(["epmd", "-port", env["ERL_EPMD_PORT"], "-kill"], env=env, capture_output=True, check=False)


def amqp_answers(port: int) -> bool:
    import amqp

    try:
        connection = amqp.Connection(f"127.0.0.1:{port}", connect_timeout=1)
        connection.connect()
        connection.close()
    except (OSError, amqp.exceptions.AMQPError):
        return False
    return True
