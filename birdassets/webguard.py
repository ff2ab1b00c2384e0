"""The guard in front of the Dagster UI: it refuses what a web page, rather than the user, could send.

Any page open in the user's browser can send requests to ``http://127.0.0.1:<port>``: a form or an image tag needs
no script and no permission, and a domain the attacker controls can be re-pointed at 127.0.0.1 (DNS rebinding) so
that its scripts read the answers as same-origin. The guard is an ASGI middleware; before a request reaches the
webserver it refuses:

* a ``Host`` that is not this server's (a loopback name or a name the user allowed, with the served port): 403;
* a request that could change something (any method but GET/HEAD/OPTIONS, or a websocket) sent cross-site: its
  ``Origin`` is not one of the served origins, or its ``Sec-Fetch-Site`` is ``cross-site``/``same-site``: 403;
  a cross-origin read (a foreign ``Origin`` on any request) is refused the same way;
* a GraphQL mutation outside a POST (``GET /graphql?query=mutation{...}`` is sent by an ``<img>`` tag): 405;
  the query is parsed with graphql-core, the webserver's own parser, not searched for a word.

Requests without ``Origin`` (curl, scripts, the Dagster Python client) are not cross-site and pass when their
``Host`` is right. Dagster-free; :func:`guarded` wraps any ASGI app.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Host names a browser uses for this machine; another name reaching 127.0.0.1 is DNS rebinding."""

WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
"""Bind addresses meaning "every interface": never a ``Host`` a browser sends."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that browsers send cross-site without asking (and that must therefore not change anything)."""

SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values of a request made by the UI itself (``none``: typed into the address bar)."""

GRAPHQL_PATH = "/graphql"
MAX_QUERY_TOKENS = 100_000
"""Tokens parsed in a GraphQL query of a GET request before it is refused as unreadable."""

PORT = re.compile(r"[0-9]{1,5}")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardPolicy:
    """Whom the UI served on ``port`` answers.

    Attributes:
        port: the TCP port the webserver listens on (1..65535).
        hosts: host names (lower case, IPv6 without brackets) accepted in ``Host`` and ``Origin``.
    """

    port: int
    hosts: tuple[str, ...] = LOOPBACK_HOSTS

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"port must be an integer in 1..65535, got {self.port!r}")
        if not self.hosts:
            raise ValueError("the guard needs at least one allowed host name")
        bad = [h for h in self.hosts if h != h.lower() or h in WILDCARD_BINDS or h.startswith("[") or "/" in h]
        if bad:
            raise ValueError(f"allowed hosts must be lower-case names or addresses without brackets, got {bad}")

    @classmethod
    def serving(cls, bind: str, port: int, extra_hosts: Iterable[str] = ()) -> "GuardPolicy":
        """The policy of a server bound to ``bind``: the loopback names, ``bind`` itself unless it is a wildcard
        (``0.0.0.0``), and ``extra_hosts`` (names the user allowed)."""
        names = [*LOOPBACK_HOSTS, bind, *extra_hosts]
        hosts = (name.strip().lower().removeprefix("[").removesuffix("]") for name in names)
        return cls(port, tuple(dict.fromkeys(h for h in hosts if h not in WILDCARD_BINDS)))

    def serves(self, authority: str, default_port: int = 80) -> bool:
        """Whether ``authority`` (``host[:port]`` of a ``Host`` or an ``Origin``) names this server."""
        parsed = split_authority(authority, default_port)
        return parsed is not None and parsed[0] in self.hosts and parsed[1] == self.port

    def origins(self) -> list[str]:
        """The origins of the UI pages this server serves (``http://127.0.0.1:3000``, ...)."""
        return [f"http://{f'[{h}]' if ':' in h else h}:{self.port}" for h in self.hosts]


@dataclass(frozen=True)
class Request:
    """What the guard reads of a request: method, path, raw query string and headers (names lower case; a
    header given several times keeps every value)."""

    method: str
    path: str
    query_string: bytes = b""
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    websocket: bool = False

    @classmethod
    def from_scope(cls, scope: Mapping) -> "Request":
        """The request of an ASGI ``http`` or ``websocket`` scope."""
        headers: dict[str, tuple[str, ...]] = {}
        for name, value in scope.get("headers", ()):
            key = name.decode("latin-1").lower()
            headers[key] = headers.get(key, ()) + (value.decode("latin-1"),)
        websocket = scope["type"] == "websocket"
        return cls("GET" if websocket else scope["method"].upper(), scope["path"], scope.get("query_string", b""),
                   headers, websocket)

    def header(self, name: str) -> str | None:
        """The single value of header ``name``; None when absent. Raises ``ValueError`` when given twice."""
        values = self.headers.get(name, ())
        if len(values) > 1:
            raise ValueError(f"the {name} header is given {len(values)} times")
        return values[0] if values else None


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status and one line for the client and the log."""

    status: int
    reason: str


def split_authority(authority: str, default_port: int) -> tuple[str, int] | None:
    """``"Localhost:3000"`` -> ``("localhost", 3000)``, ``"[::1]"`` -> ``("::1", default_port)``; None when malformed."""
    text = authority.strip().lower()
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        host, colon, port = text.partition(":")
        port = port if colon else None
    if not host or (port is not None and not PORT.fullmatch(port)):
        return None
    return host, default_port if port is None else int(port)


def refusal(policy: GuardPolicy, request: Request) -> Refusal | None:
    """Why ``request`` must not reach the webserver, or None when it may."""
    try:
        return host_refusal(policy, request) or cross_site_refusal(policy, request) or graphql_refusal(request)
    except ValueError as error:  # a header given twice
        return Refusal(400, str(error))


def host_refusal(policy: GuardPolicy, request: Request) -> Refusal | None:
    """403 unless the ``Host`` header names this server (a rebound domain names another)."""
    host = request.header("host")
    if host is None:
        return Refusal(403, "no Host header")
    if not policy.serves(host):
        return Refusal(403, f"Host {host!r} is not this server (allowed: {', '.join(policy.origins())}; "
                            "birdassets ui --allow-host NAME adds a name)")
    return None


def cross_site_refusal(policy: GuardPolicy, request: Request) -> Refusal | None:
    """403 for a foreign ``Origin`` on any request, and for a cross-site ``Sec-Fetch-Site`` on a request that could
    change something (an unsafe method or a websocket)."""
    origin = request.header("origin")
    if origin is not None and not served_origin(policy, origin):
        return Refusal(403, f"cross-origin request from {origin!r} (this server is {policy.origins()[0]})")
    site = request.header("sec-fetch-site")
    could_change = request.websocket or request.method not in SAFE_METHODS
    if could_change and site is not None and site.lower() not in SAME_ORIGIN_FETCH_SITES:
        return Refusal(403, f"{request.method} {request.path} sent from another site (Sec-Fetch-Site: {site})")
    return None


def served_origin(policy: GuardPolicy, origin: str) -> bool:
    """Whether ``origin`` (``http://host:port``; ``null`` from sandboxed pages) is a page of this server."""
    scheme, separator, authority = origin.strip().partition("://")
    return bool(separator) and scheme.lower() == "http" and "/" not in authority and policy.serves(authority)


def graphql_refusal(request: Request) -> Refusal | None:
    """405 for a GraphQL mutation in the query string of anything but a POST (the webserver executes the
    ``query`` parameter of ``GET /graphql``); 400 for a query there that does not parse."""
    if request.method == "POST" or request.path.rstrip("/") != GRAPHQL_PATH:
        return None
    # The same split as the webserver's (Starlette's QueryParams): every `query` value is checked, not only the last.
    for name, value in parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True):
        if name != "query":
            continue
        operations = operation_types(value)
        if operations is None:
            return Refusal(400, f"the GraphQL query of this {request.method} request does not parse")
        if operations - {"query"}:
            return Refusal(405, f"GraphQL {'/'.join(sorted(operations - {'query'}))} sent by {request.method}: "
                                "operations that change something must be POSTed by the UI")
    return None


def operation_types(query: str) -> set[str] | None:
    """The operation types (``query``, ``mutation``, ``subscription``) in a GraphQL document; None if it does not
    parse."""
    from graphql import GraphQLError, parse
    from graphql.language import OperationDefinitionNode

    try:
        document = parse(query, no_location=True, max_tokens=MAX_QUERY_TOKENS)
    except GraphQLError:
        return None
    return {d.operation.value for d in document.definitions if isinstance(d, OperationDefinitionNode)}


class GuardedApp:
    """An ASGI app that answers refused requests itself (:func:`refusal`) and passes the others to ``app``."""

    def __init__(self, app, policy: GuardPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        request = Request.from_scope(scope)
        refused = refusal(self.policy, request)
        if refused is None:
            await self.app(scope, receive, send)
            return
        logger.warning("refused %s %s: %s", request.method, request.path, refused.reason)
        if request.websocket:
            await receive()  # websocket.connect; closing before accepting makes the server answer 403
            await send({"type": "websocket.close", "code": 1008, "reason": refused.reason[:120]})
        else:
            await send_refusal(send, refused)


async def send_refusal(send, refused: Refusal) -> None:
    """Answer ``refused.status`` with its reason as one line of plain text."""
    body = f"birdassets ui refused this request: {refused.reason}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if refused.status == 405:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guarded(app, policy: GuardPolicy) -> GuardedApp:
    """``app`` behind the guard."""
    return GuardedApp(app, policy)
