"""The xDS server of a node: ``grpc.aio`` serving ADS, and the node's subscriber for registry changes.

The one server-side module that imports ``grpc`` (the layer checker holds the rest to it): the
stream logic (``streams``) and the mapping (``resources``, ``plan``) know nothing of gRPC.

:class:`XdsServer` lifecycle (one switch, no reopening)::

    NEW ──start()──▶ SERVING ──aclose()──▶ CLOSED
      └──────────────aclose()───────────────▲

* :meth:`XdsServer.start` binds ``config.xds`` (port 0: any free port), with TLS when the node has a
  certificate (``config.tls_cert``/``tls_key``), and returns the bound ``host:port``; at most
  ``config.max_polls`` streams are open at once (more are refused ``RESOURCE_EXHAUSTED``);
* :meth:`XdsServer.aclose` cancels every open stream at once — ADS streams never end by themselves,
  so waiting for them would hang the node's shutdown — and is idempotent;
* as a subscriber (``kinds``, :meth:`XdsServer.on_event`) it must be subscribed to the node's
  dispatcher before serving, so no change is missed: ``node.events.subscribe(xds)``.

With read protection (``config.protect_reads`` and tokens), a stream needs call metadata
``authorization: Bearer <token>`` with any valid token; others end ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from discoverd.config import ServerConfig, join_hostport, split_hostport
from discoverd.core.events import CONTENT, Event
from discoverd.core.registry_state import RegistryState
from discoverd.errors import ConfigError, MissingExtra
from discoverd.server import auth, tls
from discoverd.server.xds.protos import ADS_METHOD, DiscoveryRequest
from discoverd.server.xds.stats import XdsClient, XdsStats
from discoverd.server.xds.streams import AdsStream, Hub

try:
    import grpc
except ImportError as exc:
    raise MissingExtra("grpcio", "grpc", "the xDS server (discoverd serve --xds)") from exc

log = logging.getLogger("discoverd.xds")

OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),  # a second server on the same port is an error, not a silent split
    ("grpc.keepalive_time_ms", 30_000),  # find dead clients: their streams would linger
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


class State(enum.Enum):
    """The lifecycle of an :class:`XdsServer`."""

    NEW = "new"
    SERVING = "serving"
    CLOSED = "closed"


class XdsServer:
    """ADS (xDS v3, state of the world) from ``registry``; see the module doc.

    ``addr`` overrides ``config.xds``; ``clock`` is the node's (nanoseconds since the epoch; stream
    start times). Raises :class:`ConfigError` without an address or for bad token specs. One event
    loop; :meth:`on_event` is synchronous and never blocks.
    """

    kinds: tuple[type[Event], ...] = CONTENT

    def __init__(
        self,
        config: ServerConfig,
        registry: RegistryState,
        *,
        addr: str = "",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.addr = addr or config.xds
        if not self.addr:
            raise ConfigError("the xDS server needs an address (config.xds, --xds HOST:PORT)")
        split_hostport(self.addr)
        self._hub = Hub(registry, default_env=config.env, clock=clock)
        gate = auth.Gate(auth.load_grants(config), protect_reads=config.protect_reads)
        self._gate = gate if gate.protect_reads else None
        self._server: Any = None
        self.state = State.NEW
        self.address = ""
        """The bound ``host:port`` (once started)."""

    def __repr__(self) -> str:
        return f"<XdsServer {self.address or self.addr} {self.state.value} {self._hub!r}>"

    # -- subscriber ----------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """A registry change: the streams watching the changed apps get the new content."""
        self._hub.on_event(event)

    # -- views ---------------------------------------------------------------------------------------

    def stats(self) -> XdsStats:
        """Counts for ``/metrics`` (streams, pushes, ACKs and NACKs per type, encodings)."""
        return self._hub.stats()

    def clients(self) -> list[XdsClient]:
        """The open streams: node id, env, zone, what each watches (for the dashboard)."""
        return self._hub.clients()

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> str:
        """Bind and serve; returns the bound ``host:port``. Raises :class:`ConfigError` for a bad
        certificate or key, ``OSError`` when the address cannot be bound, ``RuntimeError`` when not NEW."""
        if self.state is not State.NEW:
            raise RuntimeError(f"XdsServer.start: the server is {self.state.value}")
        host, _ = split_hostport(self.addr)
        credentials = _credentials(self.config)
        # streams are held like long polls: the same limit (counted apart), so streams stay bounded
        server = grpc.aio.server(options=OPTIONS, maximum_concurrent_rpcs=self.config.max_polls)
        service, method = ADS_METHOD
        handler = grpc.stream_stream_rpc_method_handler(
            self._ads, request_deserializer=DiscoveryRequest.FromString, response_serializer=None
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
        try:
            if credentials is None:
                port = server.add_insecure_port(self.addr)
            else:
                port = server.add_secure_port(self.addr, credentials)
        except RuntimeError as exc:
            raise OSError(f"xDS: cannot listen on {self.addr}: {exc}") from None
        await server.start()
        self._server = server
        self.state = State.SERVING
        self.address = join_hostport(host, port)
        log.info("xDS (ADS) listening on %s%s", self.address, " with TLS" if credentials else "")
        return self.address

    async def aclose(self) -> None:
        """Stop serving and cancel every stream at once (never waits for clients); idempotent."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        server, self._server = self._server, None
        self._hub.close_all()
        if server is not None:
            await server.stop(None)

    # -- the ADS method ------------------------------------------------------------------------------

    async def _ads(self, requests: AsyncIterator[Any], context: Any) -> None:
        """``StreamAggregatedResources``: read requests in one task, write the stream's responses."""
        if not await self._authorized(context):
            return
        stream = self._hub.open(context.peer())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_read(requests, stream))
                async for message in stream.outgoing():
                    await context.write(message)
        finally:
            self._hub.close(stream)

    async def _authorized(self, context: Any) -> bool:
        if self._gate is None:
            return True
        token = _bearer(context.invocation_metadata() or ())
        if self._gate.lookup(token) is not None:
            return True
        self._hub.refused += 1
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "xDS needs authorization: Bearer <token>")
        return False


async def _read(requests: AsyncIterator[Any], stream: AdsStream) -> None:
    """Feed the client's requests to ``stream``; the client's half-close ends the stream."""
    async for request in requests:
        stream.receive(request)
    stream.close()


def _bearer(metadata: Any) -> bytes:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip().encode()
    return b""


def _credentials(config: ServerConfig) -> Any:
    """Server credentials from the node's certificate and key, or ``None`` when TLS is off."""
    if not tls.enabled(config):
        return None
    try:
        key, cert = Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls_cert/tls_key ({config.tls_cert}, {config.tls_key}): {exc}") from None
    return grpc.ssl_server_credentials([(key, cert)])
