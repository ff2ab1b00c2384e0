"""``birdassets ui [--host H] [--port P] [--allow-host NAME ...] [--read-only] [--no-daemon] [--profile P]``: the
Dagster UI on this project, guarded against web pages and stopped as a whole.

``--profile`` (or ``BIRDASSETS_PROFILE``) picks the instance: ``local`` (SQLite under ``BIRDASSETS_HOME``) or
``production`` (PostgreSQL, queued runs, retries; :mod:`birdassets.defs.profiles`).

Three children, each in its own process group (:class:`~birdassets.supervisor.Supervisor`):

* the code server (``dagster code-server start -m birdassets.definitions``) on a Unix socket in a private
  temporary folder: it loads the definitions once, for the other two;
* the webserver (:mod:`birdassets.cli.webserver`) behind the guard (:mod:`birdassets.webguard`): only this
  server's ``Host`` names, no cross-site request that could change something, no GraphQL mutation by GET;
  ``--read-only`` serves a shared view in which Dagster refuses every mutation;
* the daemon (sensors, schedules, the run queue), started once the webserver listens (after the code server
  has loaded the definitions); ``--no-daemon`` leaves it out (a view of the results that starts no run by itself).

SIGINT (Ctrl-C) or SIGTERM stops the three and everything they started (gRPC servers, runs in progress): SIGTERM
to each group, SIGKILL :data:`~birdassets.supervisor.GRACE_S` seconds later. A child that exits on its own stops
the others (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from birdassets.cli.errors import UserError
from birdassets.defs.profiles import PROFILES

DEFINITIONS_MODULE = "birdassets.definitions"
LOCATION_NAME = "birdassets.definitions"
"""The code location's name in the UI (the name ``dagster dev -m birdassets.definitions`` gave it)."""

STARTUP_S = 600.0
"""How long the code server may take to load the definitions (TensorFlow and JAX imports) and the webserver
to listen."""

POLL_S = 0.2

WILDCARD_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
"""Where this machine reaches a server bound to every interface."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``ui``."""
    ui = commands.add_parser("ui", help="start the Dagster UI on this project (Ctrl-C stops it and its processes)")
    ui.add_argument("--host", default="127.0.0.1",
                    help="interface to listen on (default 127.0.0.1); its name is accepted in Host headers")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--allow-host", action="append", dest="allow_hosts", default=[], metavar="NAME",
                    help="another name to accept in Host headers besides 127.0.0.1, localhost, [::1] and --host "
                    "(a reverse proxy's, this machine's LAN name); repeat for several")
    ui.add_argument("--read-only", action="store_true",
                    help="a shared view: no run launches, no sensor or schedule toggles, no other change")
    ui.add_argument("--no-daemon", action="store_true",
                    help="no daemon: sensors, schedules and automation do not tick, queued runs wait")
    add_profile_option(ui)
    ui.set_defaults(func=cmd_ui)


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    """``--profile local|production`` (:data:`~birdassets.defs.profiles.PROFILES`), for ``ui`` and ``worker``."""
    parser.add_argument("--profile", choices=tuple(PROFILES), default=None,
                        help="the Dagster instance: local (SQLite under BIRDASSETS_HOME) or production (PostgreSQL at "
                        "BIRDASSETS_POSTGRES_URL, queued runs, run retries); default: $BIRDASSETS_PROFILE, else local")


def cmd_ui(args: argparse.Namespace) -> int:
    from birdassets.defs.profiles import prepare_instance
    from birdassets.settings import load_settings
    from birdassets.supervisor import Supervisor

    settings = load_settings()
    guard_policy(args)  # a bad --port stops here, before anything starts
    check_port_free(args.host, args.port)
    prepare_instance(settings, args.profile)
    with (stop_signals() as stopping, tempfile.TemporaryDirectory(prefix="birdassets-ui-") as scratch,
          Supervisor() as children):
        if start_children(children, args, Path(scratch), stopping):
            mode = " (read-only)" if args.read_only else ""
            mode += " without the daemon" if args.no_daemon else ""
            print(f"birdassets ui: serving {served_url(args.host, args.port)}{mode}; profile "
                  f"{os.environ['BIRDASSETS_PROFILE']}, DAGSTER_HOME={settings.layout.dagster_home}; Ctrl-C stops it",
                  flush=True)
            wait_for(lambda: False, "a signal to stop", children, stopping, seconds=math.inf)
        print("birdassets ui: stopping the webserver, the daemon and the code server", flush=True)
    return 0


def guard_policy(args: argparse.Namespace):
    """The guard's :class:`~birdassets.webguard.GuardPolicy` of the flags (a bad port is a user error)."""
    from birdassets.webguard import GuardPolicy

    try:
        return GuardPolicy.serving(args.host, args.port, args.allow_hosts)
    except ValueError as error:
        raise UserError(str(error)) from error


def check_port_free(host: str, port: int) -> None:
    """Raise a UserError now, rather than from the webserver a minute later, when ``host:port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port} ({error.strerror or error}); choose another --port") \
                from error


@contextmanager
def stop_signals():
    """An event set by SIGINT or SIGTERM while inside (the previous handlers come back on leaving)."""
    stopping = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stopping.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def start_children(children, args: argparse.Namespace, scratch: Path, stopping: threading.Event) -> bool:
    """Start the code server and the webserver, then the daemon once the webserver listens (it listens once the
    code server has loaded the definitions); True then, False when stopped first."""
    code_socket = str(scratch / "code.sock")
    workspace = write_workspace(scratch / "workspace.yaml", code_socket)
    children.start("code server", [sys.executable, "-m", "dagster", "code-server", "start", "-m", DEFINITIONS_MODULE,
                                   "--socket", code_socket, "--location-name", LOCATION_NAME, "--log-level", "warning"])
    children.start("webserver", [sys.executable, "-m", "birdassets.cli.webserver", "--host", args.host,
                                 "--port", str(args.port), "--workspace", str(workspace), "--code-socket", code_socket,
                                 *(f"--allow-host={name}" for name in args.allow_hosts),
                                 *(["--read-only"] if args.read_only else [])])
    print(f"birdassets ui: loading {DEFINITIONS_MODULE} (TensorFlow and JAX take a while)...", flush=True)
    if not wait_for(lambda: listening(args.host, args.port), "the webserver to listen", children, stopping):
        return False
    if args.no_daemon:
        return True
    children.start("daemon", [sys.executable, "-m", "dagster._daemon", "run", "--workspace", str(workspace),
                              "--log-level", "info"])
    return True


def write_workspace(path: Path, code_socket: str) -> Path:
    """A workspace file (JSON is YAML) with one location: the code server on ``code_socket``."""
    from birdassets.atomic import write_text

    spec = {"load_from": [{"grpc_server": {"socket": code_socket, "location_name": LOCATION_NAME}}]}
    write_text(path, json.dumps(spec, indent=2))
    return path


def served_url(host: str, port: int) -> str:
    """The UI's address for this machine's browser (``http://[::1]:3000`` for ``--host ::1``)."""
    address = WILDCARD_LOOPBACK.get(host, host)
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port`` (a wildcard bind is reached on loopback)."""
    try:
        with socket.create_connection((WILDCARD_LOOPBACK.get(host, host), port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for(condition, what: str, children, stopping: threading.Event, seconds: float = STARTUP_S) -> bool:
    """Poll ``condition`` until it holds (True) or a stop signal arrives (False).

    Raises:
        SystemExit: a child exited (its name and status), or ``seconds`` passed (``what`` was awaited).
    """
    deadline = time.monotonic() + seconds
    while not stopping.is_set():
        gone = children.exited()
        if gone is not None:
            raise SystemExit(f"birdassets ui: the {gone.name} exited with status {gone.process.returncode}; "
                             "stopping the others (its messages are above)")
        if condition():
            return True
        if time.monotonic() > deadline:
            raise SystemExit(f"birdassets ui: gave up waiting for {what} after {seconds:.0f} s")
        stopping.wait(POLL_S)
    return False
