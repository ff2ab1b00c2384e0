"""``birdassets ui``: web pages cannot drive it, job configs cannot write outside the roots, signals stop it all.

The guard (:mod:`birdassets.webguard`) is checked in milliseconds against a tiny ASGI app; then the requests of
issue #10 are sent to a real running ``birdassets ui`` (a temp ``BIRDASSETS_HOME``, a free port) and its Dagster
instance is read to show that nothing was launched; SIGTERM and SIGINT must leave no descendant alive 10 s later.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from birdassets.cli import main
from birdassets.cli.ui import served_url
from birdassets.supervisor import KILL_WAIT_S, Supervisor
from birdassets.train.config import TrainConfigError, run_directory
from birdassets.webguard import GuardedApp, GuardPolicy, Request, refusal, split_authority
from birdassets_tests.ui_server import STOP_S, UiServer, alive, kill_all, start_ui

PORT = 3000
POLICY = GuardPolicy.serving("127.0.0.1", PORT)
SELF = f"http://127.0.0.1:{PORT}"
LAUNCH_TRAIN = """mutation { launchRun(executionParams: {
  selector: {repositoryLocationName: "birdassets.definitions", repositoryName: "__repository__", jobName: "train_job"},
  runConfigData: %s, executionMetadata: {tags: [{key: "birdassets-test", value: "%s"}]}
}) { __typename ... on LaunchRunSuccess { run { runId } } } }"""
TAG = "birdassets-test"


# --- the guard alone -------------------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    body: str
    reached: bool


def exchange(method="GET", path="/graphql", query="", headers=None, websocket=False, policy=POLICY) -> Answer:
    """One request through the guard in front of an app that answers 200 (101 for a websocket)."""
    headers = {"host": f"127.0.0.1:{PORT}", **(headers or {})}
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["type"])
        if websocket:
            await receive()
            await send({"type": "websocket.accept"})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    pairs = [(k.encode(), v.encode()) for k, values in headers.items() if values is not None
             for v in (values if isinstance(values, list) else [values])]
    scope = {"type": "websocket" if websocket else "http", "method": method, "path": path,
             "query_string": query.encode(), "headers": pairs}
    incoming = [{"type": "websocket.connect"} if websocket else {"type": "http.request", "body": b""}]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(GuardedApp(app, policy)(scope, receive, send))
    if websocket:
        return Answer(101 if sent[0]["type"] == "websocket.accept" else 403, sent[0].get("reason", ""), bool(reached))
    return Answer(sent[0]["status"], sent[1]["body"].decode(), bool(reached))


def graphql_get(query: str, **headers) -> Answer:
    return exchange("GET", "/graphql", urllib.parse.urlencode({"query": query}), headers)


MUTATION = "mutation { launchRun(executionParams: {}) { __typename } }"


@pytest.mark.parametrize("query", [
    MUTATION,
    "mutation Launch { stopSensor(id: \"x\") { __typename } }",
    "query Q { version } mutation M { logTelemetry(action: \"x\") { __typename } }",  # one of several operations
])
def test_a_graphql_mutation_by_get_is_refused_with_405(query):
    answer = graphql_get(query)
    assert (answer.status, answer.reached) == (405, False)
    assert "mutation sent by GET" in answer.body
    assert exchange("HEAD", "/graphql", urllib.parse.urlencode({"query": query})).status == 405


def test_the_mutation_check_parses_rather_than_searches():
    """The word 'mutation' in a comment, a string or an alias is not a mutation; a hidden second `query` is."""
    for harmless in ["{ version } # mutation { launchRun }", '{ runOrError(runId: "mutation") { __typename } }',
                     "{ mutation: version }", "query mutation { version }"]:
        assert graphql_get(harmless).status == 200, harmless
    smuggled = exchange(query=urllib.parse.urlencode([("query", "{ version }"), ("query", MUTATION)]))
    assert smuggled.status == 405
    assert graphql_get("MUTATION { x }").status == 400  # keywords are case-sensitive: the server could not parse it
    assert graphql_get(MUTATION).status == 405 and exchange("GET", "/runs", "query=" + MUTATION).status == 200


@pytest.mark.parametrize("host, allowed", [
    ("evil.example", False), (f"evil.example:{PORT}", False), ("127.0.0.1:3001", False), ("127.0.0.1", False),
    (f"127.0.0.1:{PORT}", True), (f"LOCALHOST:{PORT}", True), (f"[::1]:{PORT}", True), (f"[::1]:{PORT}x", False),
    (f"127.0.0.1.nip.io:{PORT}", False),
])
def test_only_this_servers_host_names_are_accepted(host, allowed):
    answer = exchange("GET", "/server_info", headers={"host": host})
    assert (answer.status, answer.reached) == ((200, True) if allowed else (403, False))
    if not allowed:
        assert "is not this server" in answer.body


def test_a_request_without_host_or_with_two_is_refused():
    assert exchange(headers={"host": None}).status == 403
    assert exchange(headers={"host": [f"127.0.0.1:{PORT}", "evil.example"]}).status == 400


def test_the_host_named_by_the_user_is_accepted_and_a_wildcard_adds_nothing():
    lan = GuardPolicy.serving("box.lan", PORT, ["proxy.example"])
    assert lan.hosts == ("127.0.0.1", "localhost", "::1", "box.lan", "proxy.example")
    assert exchange(headers={"host": f"box.lan:{PORT}"}, policy=lan).status == 200
    assert GuardPolicy.serving("0.0.0.0", PORT).hosts == POLICY.hosts
    with pytest.raises(ValueError, match="1..65535"):
        GuardPolicy.serving("127.0.0.1", 0)


@pytest.mark.parametrize("method, headers, status", [
    ("POST", {"origin": "http://evil.example"}, 403),
    ("POST", {"origin": "null"}, 403),
    ("POST", {"origin": f"https://127.0.0.1:{PORT}"}, 403),
    ("POST", {"origin": "http://127.0.0.1:3001"}, 403),
    ("PUT", {"origin": "http://evil.example"}, 403),
    ("DELETE", {"sec-fetch-site": "cross-site"}, 403),
    ("POST", {"sec-fetch-site": "same-site"}, 403),
    ("GET", {"origin": "http://evil.example"}, 403),  # a cross-origin read
    ("POST", {"origin": SELF, "sec-fetch-site": "same-origin"}, 200),
    ("POST", {"origin": f"http://localhost:{PORT}"}, 200),
    ("POST", {}, 200),  # curl, scripts: no Origin, not a browser
    ("GET", {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}, 200),  # a link to the UI
])
def test_cross_site_requests_that_could_change_something_are_refused(method, headers, status):
    answer = exchange(method, "/graphql", headers=headers)
    assert (answer.status, answer.reached) == (status, status == 200)


def test_a_cross_site_websocket_is_refused_before_the_app_sees_it():
    refused = exchange(websocket=True, headers={"origin": "http://evil.example"})
    assert (refused.status, refused.reached) == (403, False) and "cross-origin" in refused.body
    assert exchange(websocket=True, headers={"origin": SELF}).reached
    assert not exchange(websocket=True, headers={"origin": SELF, "host": "evil.example"}).reached


def test_request_parsing_and_authorities():
    assert split_authority("[::1]:80", 80) == ("::1", 80) and split_authority("Localhost", 80) == ("localhost", 80)
    assert split_authority("::1", 80) is None and split_authority("a:b", 80) is None and split_authority(":1", 80) is None
    request = Request.from_scope({"type": "http", "method": "post", "path": "/graphql",
                                  "headers": [(b"Origin", b"http://evil.example")]})
    assert request.method == "POST" and refusal(POLICY, request).status == 403  # no Host header either


# --- job configs that name paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("run", ["/tmp/abs", "../x", "..", ".", "", "a/b", "x\\..\\y", "run name"])
def test_a_training_run_name_must_be_a_plain_name(tmp_path, run):
    with pytest.raises(TrainConfigError, match="must be a plain name"):
        run_directory(run, [tmp_path / "checkpoints"])


def test_a_training_run_resolves_under_the_roots(tmp_path):
    first, second, outside = tmp_path / "checkpoints", tmp_path / "more", tmp_path / "elsewhere"
    for folder in (first, second, outside):
        folder.mkdir()
    assert run_directory("demo-sup", [first, second]) == first / "demo-sup"
    (first / "moved").symlink_to(second)
    assert run_directory("moved", [first, second]) == first / "moved"
    (first / "escape").symlink_to(outside)
    with pytest.raises(TrainConfigError, match="outside every checkpoint root"):
        run_directory("escape", [first, second])


# --- the command ------------------------------------------------------------------------------------------------

def test_ui_keeps_its_flags_and_refuses_a_busy_port_in_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["ui", "--host", "127.0.0.1", "--port", str(busy.getsockname()[1]), "--read-only",
                     "--allow-host", "box.lan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("birdassets ui: cannot listen on 127.0.0.1:") and "\n" not in err


def test_the_printed_address_is_one_this_machine_reaches():
    assert served_url("0.0.0.0", 3000) == "http://127.0.0.1:3000" and served_url("::1", 8080) == "http://[::1]:8080"


def groups(processes: list[psutil.Process]) -> set[int]:
    found = set()
    for process in processes:
        try:
            found.add(os.getpgid(process.pid))
        except ProcessLookupError:
            pass
    return found


def test_the_supervisor_stops_a_whole_tree_even_what_ignores_sigterm_or_left_its_group():
    """A child ignoring SIGTERM with a grandchild in its group and one in a session of its own: all killed."""
    with Supervisor() as children:
        child = children.start("stubborn", ["bash", "-c", "trap '' TERM; setsid sleep 300 & sleep 300 & wait"])
        deadline = time.monotonic() + 10
        while len(groups(tree := psutil.Process(child.process.pid).children())) < 2:  # one left the group
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        children.stop(grace_s=0.5)
        took = time.monotonic() - started
    assert alive(tree) == [] and child.process.returncode == -signal.SIGKILL and took < 0.5 + KILL_WAIT_S + 1.0


# --- a real `birdassets ui` ----------------------------------------------------------------------------------------

def start_server(home: Path, read_only: bool, started: list) -> UiServer:
    """``birdassets ui`` on a new, empty home (no data: sensors stay idle)."""
    home.mkdir(parents=True)
    (home / "birdassets.toml").write_text("include_demo = false\npretrained = []\n")
    return start_ui(home, ["--read-only"] if read_only else [], started, read_only)


class Servers:
    """Module-wide servers (plain and ``--read-only``), started on first use. A test that stops one takes it out
    of the pool; a later test then gets a fresh one, so any order passes (the file's order starts each once)."""

    def __init__(self, root: Path) -> None:
        self.root, self.running, self.all = root, {}, []
        self.started = 0

    def get(self, read_only: bool = False) -> UiServer:
        server = self.running.get(read_only)
        if server is None or server.process.poll() is not None:
            self.started += 1
            server = start_server(self.root / f"home-{self.started}", read_only, self.all)
            self.running[read_only] = server
        return server

    def take(self, read_only: bool) -> UiServer:
        """A running server that no later test will be given (the caller stops it)."""
        server = self.get(read_only)
        del self.running[read_only]
        return server


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    pool = Servers(tmp_path_factory.mktemp("ui"))
    yield pool
    for server in pool.all:
        kill_all(server)


def launch_train(server: UiServer, run_config: dict, tag: str, how: str, **headers) -> tuple[int, str]:
    """Send ``launchRun`` of train_job: ``how`` is ``GET`` (query string) or ``POST`` (JSON body)."""
    query = LAUNCH_TRAIN % (json.dumps(json.dumps(run_config)), tag)
    if how == "GET":
        return server.request("GET", "/graphql", query={"query": query}, headers=headers)
    return server.request("POST", "/graphql", body={"query": query}, headers=headers)


CHEAP_TRAINING = {"num_steps": 1, "checkpoint_every": 1, "batch_size": 2}


@pytest.mark.slow
def test_get_mutation_from_a_foreign_page_is_refused_and_launches_nothing(servers, tmp_path):
    server, tag, target = servers.get(), f"get-{uuid.uuid4().hex[:8]}", tmp_path / "get-run"
    config = {"ops": {"train_encoder": {"config": {"run": str(target), **CHEAP_TRAINING}}}}
    status, text = launch_train(server, config, tag, "GET", Origin="http://evil.example")
    assert status in (403, 405), text
    status, text = launch_train(server, config, tag, "GET")  # an <img src=...> sends no Origin
    assert status == 405 and "mutation sent by GET" in text
    assert server.runs({TAG: tag}) == []


@pytest.mark.slow
def test_post_mutation_from_a_foreign_origin_is_refused(servers, tmp_path):
    server, tag = servers.get(), f"post-{uuid.uuid4().hex[:8]}"
    config = {"ops": {"train_encoder": {"config": {"run": "innocent", **CHEAP_TRAINING}}}}
    status, text = launch_train(server, config, tag, "POST", Origin="http://evil.example")
    assert status == 403 and "cross-origin request from 'http://evil.example'" in text
    status, _ = launch_train(server, config, tag, "POST", **{"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    assert server.runs({TAG: tag}) == []


@pytest.mark.slow
def test_a_rebound_host_name_is_refused(servers):
    server = servers.get()
    status, text = server.request("POST", "/graphql", body={"query": "{ version }"}, headers={"Host": "evil.example"})
    assert status == 403 and "'evil.example' is not this server" in text
    status, _ = server.request("GET", "/", headers={"Host": f"evil.example:{server.port}"})
    assert status == 403


@pytest.mark.slow
def test_the_ui_itself_still_works(servers):
    server = servers.get()
    import dagster

    assert server.graphql("{ version }") == {"data": {"version": dagster.__version__}}
    status, page = server.request("GET", "/", headers={"Host": f"localhost:{server.port}", "Accept": "text/html"})
    assert status == 200 and "<html" in page.lower()


@pytest.mark.slow
def test_a_train_job_run_outside_the_roots_is_refused_naming_the_key(servers, tmp_path):
    server, tag, target = servers.get(), f"abs-{uuid.uuid4().hex[:8]}", tmp_path / "abs"
    config = {"ops": {"train_encoder": {"config": {"run": str(target), **CHEAP_TRAINING}}}}
    status, text = launch_train(server, config, tag, "POST", Origin=server.origin)
    assert status == 200 and "LaunchRunSuccess" in text  # launched by the user: the run itself refuses
    run = wait_for_run_end(server, tag)
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

    assert run.status == DagsterRunStatus.FAILURE
    with DagsterInstance.from_config(str(server.home / "dagster")) as instance:
        failures = [e.dagster_event.step_failure_data.error.message for e in instance.all_logs(run.run_id)
                    if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_FAILURE]
    assert len(failures) == 1 and "train_job run config: run " + repr(str(target)) in failures[0]
    assert "must be a plain name" in failures[0]
    assert not target.exists() and not any((server.home / "checkpoints").glob("*"))


def wait_for_run_end(server: UiServer, tag: str, seconds: float = 240):
    from dagster import DagsterRunStatus

    ended = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = server.runs({TAG: tag})
        if runs and runs[0].status in ended:
            return runs[0]
        time.sleep(2.0)
    raise AssertionError(f"run {tag} did not end within {seconds} s:\n{server.log.read_text()[-3000:]}")


def stop_and_list_survivors(server: UiServer, number: int) -> tuple[list[str], float]:
    """Send signal ``number`` to ``birdassets ui`` alone; the command lines of its tree still running
    :data:`STOP_S` later, and how long the command took to exit (inf: it did not)."""
    deadline = time.monotonic() + 30  # the daemon starts once the webserver listens
    while not any("_daemon" in " ".join(p.cmdline()) for p in alive(server.descendants())):
        assert time.monotonic() < deadline, "no daemon under birdassets ui"
        time.sleep(0.2)
    tree = server.descendants()
    assert len(tree) >= 4, [p.cmdline() for p in tree]  # webserver, daemon, code server, its gRPC server
    started = time.monotonic()
    os.kill(server.process.pid, number)
    while time.monotonic() - started < STOP_S and (alive(tree) or server.process.poll() is None):
        time.sleep(0.2)
    took = time.monotonic() - started if server.process.poll() is not None else float("inf")
    return [" ".join(p.cmdline())[:120] for p in alive(tree)], took


@pytest.mark.slow
def test_read_only_ui_refuses_mutations_and_sigint_stops_every_process(servers):
    """One server for both: Dagster's read-only mode refuses the launch; Ctrl-C (SIGINT) then stops the command,
    its webserver, daemon, code server and gRPC server within 10 s."""
    server, tag = servers.take(read_only=True), f"ro-{uuid.uuid4().hex[:8]}"
    config = {"ops": {"train_encoder": {"config": {"run": "shared-view", **CHEAP_TRAINING}}}}
    status, text = launch_train(server, config, tag, "POST", Origin=server.origin)
    assert status == 200 and json.loads(text)["data"]["launchRun"]["__typename"] == "UnauthorizedError"
    assert server.runs({TAG: tag}) == []
    assert server.graphql("{ version }")["data"]["version"]  # reading still works
    survivors, took = stop_and_list_survivors(server, signal.SIGINT)
    assert survivors == [] and took < STOP_S and server.process.returncode == 0


@pytest.mark.slow
def test_sigterm_stops_every_process_within_10_s(servers):
    server = servers.take(read_only=False)
    survivors, took = stop_and_list_survivors(server, signal.SIGTERM)
    assert survivors == [] and took < STOP_S and server.process.returncode == 0
