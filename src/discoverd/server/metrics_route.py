"""``GET /metrics`` of a node: :class:`Metrics`, built with the node; the exposition comes later.

The node builds :class:`Metrics` when it assembles: the latency table the pipeline's metrics stage
records into (``server/latency.py``) and the route. The Prometheus exposition — prometheus_client
and the collectors that read the node's state (``server/metrics.py``) — is built at the first
scrape, or when :attr:`Metrics.registry` is first read: a node nobody scrapes never loads
prometheus_client (a few MB of memory). That first scrape imports it on the node's loop, once
(tens of milliseconds); nothing on the protocol's request path changes. Whether prometheus_client is
installed is checked when the node assembles (without importing it): a node without it does not start.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from discoverd.core.params import Form
from discoverd.errors import MissingExtra
from discoverd.server.http import HttpRequest, HttpServer, build_response
from discoverd.server.latency import LatencyTable
from discoverd.server.parts import NodeParts
from discoverd.server.routes import Route

if TYPE_CHECKING:
    from discoverd.server.metrics import CollectorRegistry, Exposition


class Metrics:
    """The metrics of one node: the latency table, the ``/metrics`` route and, once scraped, the
    exposition with its own collector registry. Built once by the node; one loop.

    Raises :class:`~discoverd.errors.MissingExtra` when prometheus_client is not installed.
    """

    def __init__(self, parts: NodeParts, protocol_paths: Collection[str]) -> None:
        if not _installed("prometheus_client"):
            raise MissingExtra("prometheus_client", "server", "the server's /metrics")
        self.latency = LatencyTable(protocol_paths)
        self._parts = parts
        self._http: HttpServer | None = None
        self._started = time.time()
        self._exposition: Exposition | None = None

    def __repr__(self) -> str:
        state = "scraped" if self._exposition is not None else "not scraped yet"
        return f"<Metrics {self.latency!r} {state}>"

    @property
    def registry(self) -> CollectorRegistry:
        """The node's Prometheus collector registry; embedders may register more collectors on it
        (reading it loads prometheus_client, if the node was not scraped yet)."""
        return self._expose().registry

    def add_http(self, http: HttpServer) -> None:
        """Export the connections of ``http`` too (once the HTTP server exists, before serving)."""
        self._http = http
        if self._exposition is not None:  # the registry was read before the HTTP server existed
            from discoverd.server.metrics import HttpCollector

            self._exposition.registry.register(HttpCollector(http))

    def route(self) -> Route:
        """``GET /metrics``: a read like any other (with ``protect_reads`` a scrape needs a token)."""
        return Route("/metrics", frozenset({"GET"}), self.serve)

    def serve(self, req: HttpRequest, form: Form) -> bytes:
        """The text format (OpenMetrics when the scraper asks for it)."""
        body, content_type = self._expose().render(req.header("accept"))
        return build_response(200, body, content_type=content_type)

    def _expose(self) -> Exposition:
        exposition = self._exposition
        if exposition is None:  # the first scrape: prometheus_client is loaded now, once
            from discoverd.server.metrics import Exposition

            exposition = self._exposition = Exposition(
                self._parts, self.latency, self._http, started=self._started
            )
        return exposition


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it; or sys.modules holds None for it
        return False
