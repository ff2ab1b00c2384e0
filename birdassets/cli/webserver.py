"""The Dagster webserver of ``birdassets ui``, behind the guard (:mod:`birdassets.webguard`).

Run by ``birdassets ui`` as its own process (``python -m birdassets.cli.webserver``): it waits for the shared code
server, builds the webserver's ASGI app on a workspace that points at it (read-only on ``--read-only``: Dagster
then turns every mutation, launching runs and toggling sensors included, into an authorization error), wraps it
in the guard and serves it with uvicorn on ``--host``/``--port``. SIGTERM or SIGINT stops uvicorn; open
connections get :data:`~birdassets.supervisor.GRACE_S` minus one second to finish.
"""

from __future__ import annotations

import argparse
import logging
import time

from birdassets.supervisor import GRACE_S

DB_STATEMENT_TIMEOUT_MS = 15_000
DB_POOL_RECYCLE_S = 3600
DB_POOL_MAX_OVERFLOW = 20
"""The defaults of ``dagster-webserver`` for its instance's database connections."""

LIVE_DATA_POLL_MS = 2000
PING_TIMEOUT_S = 2
CODE_SERVER_WAIT_S = 600.0
"""How long the webserver waits for the code server to load the definitions (TensorFlow and JAX imports)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m birdassets.cli.webserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workspace", required=True, help="workspace.yaml naming the code server")
    parser.add_argument("--code-socket", required=True, help="the code server's socket, waited for")
    parser.add_argument("--allow-host", action="append", dest="allow_hosts", default=[])
    parser.add_argument("--read-only", action="store_true")
    return parser


def code_server_ready(socket_path: str) -> bool:
    """Whether the code server on ``socket_path`` answers (it does once the definitions are loaded)."""
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.__generated__ import dagster_api_pb2
    from dagster._grpc.client import DagsterGrpcClient

    try:  # `ping` waits up to a minute; a signal to stop must not
        DagsterGrpcClient(socket=socket_path)._query("Ping", dagster_api_pb2.PingRequest, timeout=PING_TIMEOUT_S, echo="")
    except DagsterUserCodeUnreachableError:
        return False
    return True


def wait_for_code_server(socket_path: str, seconds: float = CODE_SERVER_WAIT_S) -> None:
    """Block until the code server answers; ``SystemExit`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not code_server_ready(socket_path):
        if time.monotonic() > deadline:
            raise SystemExit(f"birdassets ui: the code server did not answer within {seconds:.0f} s")
        time.sleep(0.5)


def serve(args: argparse.Namespace) -> None:
    """Serve the guarded webserver until SIGTERM/SIGINT."""
    import uvicorn
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver.app import create_app_from_workspace_process_context
    from dagster_webserver.version import __version__

    from birdassets.webguard import GuardPolicy, guarded

    policy = GuardPolicy.serving(args.host, args.port, args.allow_hosts)
    wait_for_code_server(args.code_socket)
    with DagsterInstance.get() as instance:
        instance.optimize_for_webserver(DB_STATEMENT_TIMEOUT_MS, DB_POOL_RECYCLE_S, DB_POOL_MAX_OVERFLOW)
        target = WorkspaceFileTarget(paths=[args.workspace])
        with WorkspaceProcessContext(instance, target, version=__version__, read_only=args.read_only) as context:
            app = create_app_from_workspace_process_context(context, "", LIVE_DATA_POLL_MS)
            uvicorn.run(guarded(app, policy), host=args.host, port=args.port, log_level="warning",
                        timeout_graceful_shutdown=max(GRACE_S - 1.0, 1.0))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="birdassets ui: %(message)s")
    serve(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
