"""A running registry node: the HTTP front, the protocol app and the background loops.

:class:`Node` owns everything it starts: one ``asyncio.TaskGroup`` runs the eviction/guard loop,
the guard recount, the self-renew of ``infra.discovery``, the end of start-up protect and the
idle-connection reaper. :meth:`Node.stop` is the one switch; the stop is graceful: held polls are
answered -304, the node cancels its own registration, connections close (within 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from discoverd.config import ServerConfig, join_hostport, split_hostport
from discoverd.core.registry import Registry
from discoverd.server import auth, dashboard, metrics, tls
from discoverd.server.app import ProtocolApp
from discoverd.server.cluster import refresh_peers, sync_from_peers
from discoverd.server.http import HttpServer, text_response
from discoverd.server.persistence import Persistence
from discoverd.server.replication import Replicator

log = logging.getLogger("discoverd.node")


class Node:
    """One registry node. Use :meth:`run` (blocks until stopped) or :func:`running_node`."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None) -> None:
        self.config = config
        self._registry = registry
        self.app: ProtocolApp | None = None
        self.http: HttpServer | None = None
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._closed = False
        self.persistence: Persistence | None = None

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "ready" if self.ready.is_set() else "starting"
        return f"<Node {self.config.advertise or self.config.addr} {state}>"

    @property
    def address(self) -> str:
        """The bound ``host:port`` (valid once :attr:`ready` is set)."""
        assert self.http is not None
        return join_hostport(*self.http.address)

    def stop(self) -> None:
        """Ask the node to stop gracefully; idempotent, safe from signal handlers."""
        self._stop.set()

    async def _start(self) -> ProtocolApp:
        host, port = split_hostport(self.config.addr)
        config = self.config
        auth.preflight(config)  # bad tokens, certificates or CA fail before binding
        server_ssl = tls.server_context(config)
        self.http = HttpServer(
            lambda _req: text_response(503, "starting"),
            max_body=config.max_body,
            idle_timeout=config.idle_timeout,
            max_conns_per_host=config.max_conns_per_host,
        )
        await self.http.start(host, port, ssl=server_ssl)
        for warning in auth.exposure_warnings(host, config):
            log.warning("%s", warning)
        if not config.advertise:
            config = config.replace(advertise=self.address)
            self.config = config
        app = ProtocolApp(config, self._registry)
        metrics.install(app, self)
        auth.install(app, config)
        if config.dashboard:
            dashboard.install(app, self)
        self.http.handler, self.http.on_abort = app.handle, app.on_abort
        self.app = app
        log.info("discoverd listening on %s (advertise %s)", self.address, config.advertise)
        return app

    def _wire_cluster(self, app: ProtocolApp, tg: asyncio.TaskGroup) -> Replicator:
        c = self.config
        replicator = Replicator(
            zone=c.zone,
            me=c.advertise,
            queue_limit=c.replication_queue,
            spawn=tg.create_task,
            local_copy=app.local_copy,
            adopt=app.adopt,
            scheme=tls.peer_scheme(c),
            ssl_context=tls.client_context(c),
            peer_secret=c.peer_secret,
        )
        app.replicator = replicator
        app.on_infra_change = lambda: refresh_peers(app)
        refresh_peers(app)
        return replicator

    async def run(self) -> None:
        """Start, serve until :meth:`stop`, then shut down gracefully. Not re-entrant."""
        if self._closed:
            raise RuntimeError("a Node cannot be restarted")
        app = await self._start()
        c = self.config
        replicator: Replicator | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                if c.data_dir:
                    self.persistence = Persistence(app, c.data_dir)
                    await self.persistence.restore()
                replicator = self._wire_cluster(app, tg)
                if await sync_from_peers(app, replicator, c.sync_timeout):
                    app.protected = False
                app.register_self()
                tasks = [
                    tg.create_task(_every(c.evict_interval, app.evict)),
                    tg.create_task(
                        _every(
                            c.recount_interval,
                            lambda: app.registry.guard.recount(app.registry.size),
                        )
                    ),
                    tg.create_task(_every(c.self_renew_interval, app.renew_self)),
                    tg.create_task(_every(max(1.0, c.idle_timeout / 4), self._reap)),
                ]
                if app.protected:
                    tasks.append(tg.create_task(self._end_protect(c.protect_duration)))
                if self.persistence is not None:
                    tasks.append(tg.create_task(self.persistence.run(c.snapshot_interval)))
                self.ready.set()
                await self._stop.wait()
                for t in tasks:
                    t.cancel()
                await self._shutdown(app, replicator)
        finally:
            if not self._closed:
                await self._shutdown(app, replicator)

    async def _end_protect(self, after: float) -> None:
        await asyncio.sleep(after)
        if self.app is not None and self.app.protected:
            self.app.protected = False
            log.info(
                "start-up protect ended after %.0f s", after, extra={"event": "protect", "protect": False}
            )

    def _reap(self) -> None:
        if self.http is not None:
            self.http.reap_idle()

    async def _shutdown(self, app: ProtocolApp, replicator: Replicator | None) -> None:
        self._closed = True
        assert self.http is not None
        self.http.stop_accepting()
        answered = app.shutdown()
        if self.persistence is not None:
            await self.persistence.save(force=True)
        app.cancel_self()
        await asyncio.sleep(0)  # let the transports flush what was just written
        if replicator is not None:  # give the peers a moment to hear of our leave
            await replicator.drain(0.5)
            await replicator.aclose()
        await asyncio.wait_for(self.http.close(), timeout=1.0)
        log.info("discoverd stopped (%d held poll(s) answered -304)", answered)


async def _every(period: float, fn: Callable[[], object]) -> None:
    """Call ``fn`` every ``period`` seconds (first call after one period), until cancelled."""
    while True:
        await asyncio.sleep(period)
        try:
            fn()
        except Exception:
            log.exception("periodic task %r failed", fn)


@contextlib.asynccontextmanager
async def running_node(config: ServerConfig, registry: Registry | None = None) -> AsyncIterator[Node]:
    """Run a node in the current loop for the duration of the block (tests, embedding)."""
    node = Node(config, registry)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(node.run())
        ready = tg.create_task(node.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task  # re-raises the start-up failure
        try:
            yield node
        finally:
            node.stop()


def serve_forever(config: ServerConfig, *, on_ready: Callable[[Node], None] | None = None) -> None:
    """Run a node until SIGINT/SIGTERM, on uvloop where available. Blocks."""

    async def main() -> None:
        node = Node(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, node.stop)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(node.run())
            await node.ready.wait()
            if on_ready is not None:
                on_ready(node)

    _run(main())


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(coro)
    else:
        uvloop.run(coro)
