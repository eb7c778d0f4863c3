"""A running registry node, assembled in one place.

:meth:`Node.run` does, in order:

1. **bind** the listen socket (nothing is accepted yet), so the advertised address is known; raise
   the file-descriptor soft limit to the hard one;
2. **assemble** the parts (:meth:`Node._assemble`): registry, dispatcher and its subscribers in
   delivery order (stats → snapshots → cluster → replication → event log → long polls →
   dashboard), the endpoints, the route table, the request pipeline, and the HTTP server with its
   final handler;
3. **restore** the snapshot (``--data-dir``), before any request is served;
4. **serve**: accept connections (and reap overdue ones from then on); learn the peer set, sync
   from the peers (ending start-up protect when one answers), register itself;
5. run the **loops** in one ``asyncio.TaskGroup``: eviction, guard recount, self-renew, end of
   start-up protect, snapshots;
6. on :meth:`Node.stop` (the one switch, effective at any point of 1–5: a stop during the start-up
   sync ends it at once), **shut down** gracefully: stop accepting, answer held polls -304, save the
   snapshot, cancel the own registration, let replication drain briefly, close connections
   (within 2 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from discoverd.config import ServerConfig, join_hostport, split_hostport
from discoverd.core.events import ProtectChanged
from discoverd.core.registry_state import RegistryState
from discoverd.server import auth, pipeline, tls
from discoverd.server.cluster import Membership, sync_from_peers
from discoverd.server.dashboard import Dashboard
from discoverd.server.eventlog import EventLog
from discoverd.server.events import Dispatcher
from discoverd.server.http import HttpServer
from discoverd.server.http_limits import HttpLimits, connections_for, fd_soft_limit, raise_fd_limit
from discoverd.server.http_listen import bind_socket, socket_address
from discoverd.server.lifecycle import Lifecycle
from discoverd.server.logs import RequestScope
from discoverd.server.metrics_route import Metrics
from discoverd.server.parking import Parking
from discoverd.server.parts import NodeParts
from discoverd.server.persistence import Persistence
from discoverd.server.polls import LongPolls
from discoverd.server.protocol import Endpoints
from discoverd.server.replication import Replicator
from discoverd.server.routes import RouteTable, health_route, protocol_routes
from discoverd.server.stats import Counters, EventCounter
from discoverd.server.xds.stats import XdsService

log = logging.getLogger("discoverd.node")


class Node:
    """One registry node. Use :meth:`run` (blocks until stopped) or ``runner.running_node``.

    The parts (:attr:`registry`, :attr:`events`, :attr:`polls`, ...) exist once :attr:`ready` is set.
    """

    def __init__(
        self,
        config: ServerConfig,
        registry: RegistryState | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else RegistryState()
        self.clock = clock
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._closed = False
        self.events = Dispatcher()
        """Subscribe here to receive the node's events (after the node's own subscribers)."""
        self.xds_address = ""
        """The xDS server's bound ``host:port`` once serving (``--xds``), else ""."""
        self.counters = Counters()

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "ready" if self.ready.is_set() else "starting"
        return f"<Node {self.config.advertise or self.config.addr} {state}>"

    @property
    def address(self) -> str:
        """The bound ``host:port`` (valid once :attr:`ready` is set)."""
        return join_hostport(*self.http.address)

    def stop(self) -> None:
        """Ask the node to stop gracefully; idempotent, safe from signal handlers."""
        self._stop.set()

    async def run(self) -> None:
        """Start, serve until :meth:`stop`, then shut down gracefully. Not re-entrant."""
        if self._closed:
            raise RuntimeError("a Node cannot be restarted")
        auth.preflight(self.config)  # bad tokens, certificates or CA fail before binding
        host, port = split_hostport(self.config.addr)
        sock = bind_socket(host, port)
        try:
            _raise_fd_limit(self.config)
            if not self.config.advertise:
                self.config = self.config.replace(advertise=join_hostport(*socket_address(sock)))
            async with asyncio.TaskGroup() as tg:
                self._assemble(tg)
                try:
                    await self._restore()
                    if not self._stop.is_set():
                        await self.http.start(sock, ssl_context=tls.server_context(self.config))
                        if self.xds is not None:
                            self.xds_address = await self.xds.start()
                        for warning in auth.exposure_warnings(host, self.config):
                            log.warning("%s", warning)
                        log.info(
                            "discoverd listening on %s (advertise %s)", self.address, self.config.advertise
                        )
                        await self._serve(tg)
                finally:
                    await self._shutdown()
        finally:
            sock.close()

    # -- assembly ----------------------------------------------------------------------------------

    def _assemble(self, tg: asyncio.TaskGroup) -> None:
        """Build every part; subscribe them in delivery order; build the pipeline and HTTP server."""
        c, reg, publish = self.config, self.registry, self.events.publish
        loop = asyncio.get_running_loop()
        reg.guard.threshold = c.protect_threshold
        self.lifecycle = Lifecycle(c, reg, clock=self.clock, publish=publish)
        self.parking = Parking(loop, c.max_polls)
        self.persistence = Persistence(reg, c.data_dir, clock=self.clock) if c.data_dir else None
        self.membership = Membership(c, reg, publish)
        self.replicator = self._replicator(tg)
        self.polls = LongPolls(reg, self.parking, c, self.counters, loop)
        self.xds = _xds_server(c, reg, self.clock)
        parts = NodeParts(
            c,
            reg,
            self.counters,
            self.lifecycle,
            self.parking,
            self.replicator,
            self.persistence,
            self.clock,
            self.membership,
            self.xds,
        )
        self.dashboard = Dashboard(parts, self.parking, loop) if c.dashboard else None
        scope = RequestScope()
        for subscriber in (
            EventCounter(self.counters),
            self.persistence,
            self.membership,
            self.replicator,
            EventLog(scope, loop.call_later),
            self.polls,
            self.dashboard,
            self.xds,
        ):
            if subscriber is not None:
                self.events.subscribe(subscriber)
        self.endpoints = Endpoints(
            reg,
            clock=self.clock,
            publish=publish,
            polls=self.polls,
            counters=self.counters,
            nodes=self.replicator.nodes,
        )
        protocol = protocol_routes(self.endpoints)
        self.metrics = Metrics(parts, [r.path for r in protocol])
        dashboard_routes = self.dashboard.routes() if self.dashboard is not None else []
        self.routes = RouteTable([*protocol, self.metrics.route(), health_route(), *dashboard_routes])
        self.gate = auth.gate_for(c)
        handler = pipeline.build(
            self.routes,
            scope=scope,
            lifecycle=self.lifecycle,
            gate=self.gate,
            observe=self.metrics.latency.observe,
            access_log=c.access_log,
        )
        limits = HttpLimits.from_config(c, fd_soft_limit())
        self.http = HttpServer(handler, on_abort=self.parking.abort, limits=limits)
        self.metrics.add_http(self.http)

    def _replicator(self, tg: asyncio.TaskGroup) -> Replicator:
        c = self.config
        return Replicator(
            zone=c.zone,
            me=c.advertise,
            queue_limit=c.replication_queue,
            spawn=tg.create_task,
            local_copy=self.lifecycle.local_copy,
            adopt=self.lifecycle.adopt,
            publish=self.events.publish,
            scheme=tls.peer_scheme(c),
            ssl_context=tls.client_context(c),
            peer_secret=c.peer_secret,
        )

    # -- start, loops, stop ------------------------------------------------------------------------

    async def _restore(self) -> None:
        if self.persistence is None:
            return
        loaded = await self.persistence.restore()
        if loaded is not None:
            self.lifecycle.hold_eviction()
            self.events.publish(loaded)
            self.persistence.mark_saved()

    async def _serve(self, tg: asyncio.TaskGroup) -> None:
        c, life = self.config, self.lifecycle
        tasks = [tg.create_task(_every(self.http.limits.period, self.http.table.reap))]
        try:
            self.membership.refresh()
            if life.protected:
                self.events.publish(
                    ProtectChanged(True, f"start-up: reads refused for up to {c.protect_duration:g} s")
                )
            if not await self._unless_stopped(self._sync()):
                return
            life.register_self()
            tasks += [
                tg.create_task(_every(c.evict_interval, life.evict)),
                tg.create_task(_every(c.recount_interval, life.recount)),
                tg.create_task(_every(c.self_renew_interval, life.renew_self)),
            ]
            if life.protected:
                tasks.append(tg.create_task(self._end_protect(c.protect_duration)))
            if self.persistence is not None:
                tasks.append(tg.create_task(self.persistence.run(c.snapshot_interval)))
            self.ready.set()
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()

    async def _sync(self) -> None:
        synced = await sync_from_peers(
            self.replicator,
            self.registry,
            clock=self.clock,
            publish=self.events.publish,
            timeout=self.config.sync_timeout,
        )
        if synced:
            self.lifecycle.end_protect("synced from a peer")

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` to its end (True), unless :meth:`stop` is asked first: then cancel it (False)."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            task.cancel()  # nothing when it ended
        if not task.done() or task.cancelled():
            return False
        task.result()  # its failure is the node's
        return True

    async def _end_protect(self, after: float) -> None:
        await asyncio.sleep(after)
        self.lifecycle.end_protect(f"{after:g} s passed")

    async def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.http.stop_accepting()
        if self.xds is not None:
            await self.xds.aclose()  # ADS streams never end by themselves: cancel them at once
        answered = self.polls.shutdown()
        if self.dashboard is not None:
            self.dashboard.shutdown()
        if self.persistence is not None:
            await self.persistence.save(force=True)
        self.lifecycle.cancel_self()
        await asyncio.sleep(0)  # let the transports flush what was just written
        await self.replicator.drain(0.5)  # give the peers a moment to hear of our leave
        await self.replicator.aclose()
        await self.http.close(within=1.0)
        t = self.http.table
        log.info(
            "discoverd stopped (%d held poll(s) answered -304; connections refused %d, accept errors %d, "
            "closed past a deadline: %s)",
            answered,
            t.admission.refused,
            t.accept_errors.total,
            ", ".join(f"{why} {n}" for why, n in t.expired.items() if n) or "none",
        )


def _xds_server(c: ServerConfig, reg: RegistryState, clock: Callable[[], int]) -> XdsService | None:
    """The xDS server when ``--xds`` is set; grpcio and protobuf are imported only then."""
    if not c.xds:
        return None
    from discoverd.server.xds.server import XdsServer

    return XdsServer(c, reg, clock=clock)


def _raise_fd_limit(c: ServerConfig) -> None:
    """Raise the soft file-descriptor limit to the hard one, and say what the connection cap is."""
    soft, hard = raise_fd_limit()
    cap = connections_for(soft)
    log.info(
        "file descriptors: soft limit %d (hard %d); max_connections %d%s",
        soft,
        hard,
        c.max_connections or cap,
        "" if c.max_connections else " (from the limit, less a reserve)",
    )
    if c.max_connections > cap:
        log.warning(
            "max_connections %d is above the %d connections a limit of %d file descriptors leaves "
            "room for (keeping %d for peers, snapshots and logs)",
            c.max_connections,
            cap,
            soft,
            soft - cap,
        )


async def _every(period: float, fn: Callable[[], object]) -> None:
    """Call ``fn`` every ``period`` seconds (first call after one period), until cancelled."""
    while True:
        await asyncio.sleep(period)
        try:
            fn()
        except Exception:
            log.exception("periodic task %r failed", fn)
