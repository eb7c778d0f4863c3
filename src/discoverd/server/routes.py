"""The route table of a node: every path it serves, protocol and not, in one place.

A :class:`Route` names its methods, its handler ``(request, form) -> answer | None``, where its
parameters come from (:class:`Params`), whether it is a protocol endpoint (answer conventions,
start-up protect, the latency histogram) and whether it may defer its answer (a held request).
The node builds one :class:`RouteTable` at assembly (``server/node.py``): the protocol endpoints
from :func:`protocol_routes`, then ``/metrics``, ``/health`` and the dashboard's routes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from discoverd.core.params import Form
from discoverd.errors import ConfigError
from discoverd.server.http import HttpRequest, text_response
from discoverd.server.protocol import Endpoints

RouteHandler = Callable[[HttpRequest, Form], "bytes | None"]
"""``(request, parsed parameters) -> encoded answer``, or ``None`` when the request is held."""


class Params(enum.Enum):
    """Where a route's :class:`~discoverd.core.params.Form` comes from."""

    FORM = "form"
    """A urlencoded POST body, then the query string (Go's ``req.Form``)."""
    QUERY = "query"
    """The query string only."""
    NONE = "none"
    """No parameters (the Go handlers of ``fetch/all`` and ``nodes`` bind none: a garbage query
    string cannot fail them)."""


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    methods: frozenset[str]
    handler: RouteHandler
    params: Params = Params.QUERY
    protocol: bool = False
    """A bilibili endpoint: -400 answers in the envelope, -500 for reads in start-up protect, timed."""
    defers: bool = False
    """May return ``None`` and answer later (a held request)."""
    public: bool = False
    """Never asks for a token (the dashboard's page and files, ``/health``)."""

    @property
    def gated(self) -> bool:
        """Refused (-500) while the node is in start-up protect: the protocol's reads."""
        return self.protocol and "GET" in self.methods


_HEAD = frozenset({"HEAD"})


class RouteTable:
    """Routes by exact path. Built once, then read-only.

    A route that answers GET answers HEAD too, with the same handler (Go's net/http does the
    same): the HTTP layer sends the GET answer's status and headers, ``Content-Length`` included,
    without its body.
    """

    __slots__ = ("_routes",)

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes: dict[str, Route] = {}
        for given in routes:
            if given.path in self._routes:
                raise ConfigError(f"two routes for {given.path}")
            head = "GET" in given.methods and "HEAD" not in given.methods
            self._routes[given.path] = replace(given, methods=given.methods | _HEAD) if head else given

    def __repr__(self) -> str:
        return f"<RouteTable {len(self._routes)} routes>"

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

    def get(self, path: str) -> Route | None:
        return self._routes.get(path)

    def paths(self, *, protocol: bool | None = None) -> list[str]:
        """Every path (only the protocol ones, or only the others, when ``protocol`` is given)."""
        return [p for p, r in self._routes.items() if protocol is None or r.protocol == protocol]


_GET = frozenset({"GET"})
_POST = frozenset({"POST"})


def protocol_routes(e: Endpoints) -> list[Route]:
    """The bilibili/discovery endpoints (spec §3)."""

    def route(
        path: str, methods: frozenset[str], handler: RouteHandler, params: Params = Params.FORM
    ) -> Route:
        return Route(
            "/discovery/" + path, methods, handler, params, protocol=True, defers=path.startswith("poll")
        )

    return [
        route("register", _POST, e.register),
        route("renew", _POST, e.renew),
        route("cancel", _POST, e.cancel),
        route("set", _POST, e.set),
        route("fetch", _GET, e.fetch),
        route("fetchs", _GET, e.fetchs),
        route("fetch/all", _GET, e.fetch_all, Params.NONE),
        route("poll", _GET, e.poll),
        route("polls", _GET, e.polls_),
        route("nodes", _GET, e.nodes, Params.NONE),
    ]


def health_route() -> Route:
    """``GET /health``: 200 ``ok`` while the node serves (liveness; it never checks peers)."""
    return Route("/health", _GET, lambda _req, _form: text_response(200, "ok"), public=True)
