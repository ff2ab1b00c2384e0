"""A real ``birdassets ui`` in a subprocess for tests: started on a free port, awaited until it serves, stopped
with everything it started (shared by the guard tests and the browser test)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


STARTUP_S = 300
STOP_S = 10.0


@dataclass
class UiServer:
    """A running ``birdassets ui`` (own session, so the test can signal it alone)."""

    home: Path
    port: int
    process: subprocess.Popen
    log: Path
    read_only: bool = False
    seen: list = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, *, query: dict | None = None, body: dict | None = None,
                headers: dict | None = None) -> tuple[int, str]:
        url = self.origin + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def graphql(self, query: str, **headers) -> dict:
        status, text = self.request("POST", "/graphql", body={"query": query},
                                    headers={"Origin": self.origin, "Sec-Fetch-Site": "same-origin", **headers})
        assert status == 200, text
        return json.loads(text)

    def runs(self, tags: dict[str, str]) -> list:
        """The runs in the server's Dagster instance with these tags."""
        from dagster import DagsterInstance, RunsFilter

        with DagsterInstance.from_config(str(self.home / "dagster")) as instance:
            return instance.get_runs(RunsFilter(tags=tags))

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


def start_ui(home: Path, flags: list[str], started: list, read_only: bool = False, env: dict | None = None) -> UiServer:
    """Start ``birdassets ui FLAGS`` on ``home`` and a free port (appended to ``started`` at once, so that it is
    stopped even if it never serves) and wait until it serves; ``env``: more environment variables."""
    port, log = free_port(), home / f"ui-{time.monotonic_ns()}.log"
    env = {**os.environ, "BIRDASSETS_HOME": str(home), **(env or {})}
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, "-m", "birdassets.cli", "ui", "--port", str(port), *flags]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = UiServer(home, port, process, log, read_only)
    started.append(server)
    wait_until_serving(server)
    server.seen = server.descendants()
    return server


def wait_until_serving(server: UiServer) -> None:
    """Until the UI answers with the code location loaded (deadline :data:`STARTUP_S`)."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()[-3000:]
        try:
            status, text = server.request("POST", "/graphql", body={
                "query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"})
            if status == 200 and json.loads(text)["data"]["repositoriesOrError"].get("nodes"):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(1.0)
    raise AssertionError(f"birdassets ui did not serve within {STARTUP_S} s:\n{server.log.read_text()[-3000:]}")


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    def running(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    return [p for p in processes if running(p)]


def kill_all(server: UiServer) -> None:
    """Last resort of the fixture: nothing of a server outlives the tests."""
    everything = server.seen + (server.descendants() if server.process.poll() is None else [])
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
    server.process.wait()
    for process in alive(everything):
        process.kill()


