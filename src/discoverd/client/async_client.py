"""The asynchronous client: registrations, fetch, watch, over one long poll (spec §8).

Lifecycle: ``async with AsyncClient(nodes=[...], env=...) as client`` (or ``await client.start()`` /
``await client.aclose()``). ``start`` blocks until a node answered (raising
:class:`~discoverd.errors.Unavailable` after ``start_timeout`` instead of hanging like the Go
client), learns the registry nodes from ``infra.discovery`` and starts the poll loop. Everything the
client runs lives in its own ``asyncio.TaskGroup``; ``aclose`` cancels registrations (graceful leave)
and stops the loop. A closed client cannot be restarted.

The long poll (:class:`~discoverd.client.poller.Poller`) keeps one ``polls`` request in flight for
every watched app (always including ``infra.discovery``); the cached lists keep being served
whatever the nodes do.

Besides the user API, the client offers collaborators a small public surface: :meth:`~AsyncClient.call`
(one raw request to a node), :meth:`~AsyncClient.spawn` and :meth:`~AsyncClient.touched` (the
:class:`~discoverd.client.registration.RegistryLink` of its registrations), :meth:`~AsyncClient.track`,
and the :class:`~discoverd.calling.source.InstanceSource` of its callers (:meth:`~AsyncClient.instances`,
:meth:`~AsyncClient.subscribe`, :meth:`~AsyncClient.zone_weights`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any

from discoverd.calling.caller import AsyncCaller
from discoverd.client.config import ClientConfig
from discoverd.client.poller import Poller
from discoverd.client.registration import AsyncRegistration, RegState
from discoverd.client.transport import Answer, NodeTransport, Params
from discoverd.core.backoff import Backoff
from discoverd.core.nodes import NodeList
from discoverd.core.watched_apps import WatchState, decode_info
from discoverd.errors import NOT_FOUND, BadRequest, DiscoverdError, Unavailable, error_for_code
from discoverd.model import INFRA_APPID, UP, Instance

log = logging.getLogger("discoverd.client")
UNAUTHORIZED = -401
FORBIDDEN = -403


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _seed_nodes(nodes: Sequence[str] | str | None) -> list[str]:
    """The registry nodes to start from: a list, ``"h:p,h:p"``, or ``$DISCOVERY_NODES`` when ``None``."""
    if nodes is None:
        nodes = os.environ.get("DISCOVERY_NODES", "")
    if isinstance(nodes, str):
        nodes = [n.strip() for n in nodes.split(",") if n.strip()]
    if not nodes:
        raise DiscoverdError("no registry node given (nodes=[...] or DISCOVERY_NODES)")
    return list(nodes)


class AsyncClient:
    """A discovery client bound to one ``env``/``zone``/``hostname`` identity. Task-safe in one loop.

    It implements :class:`~discoverd.calling.source.InstanceSource` (for callers) and
    :class:`~discoverd.client.registration.RegistryLink` (for its registrations).
    """

    def __init__(
        self,
        nodes: Sequence[str] | str | None = None,
        *,
        env: str | None = None,
        zone: str | None = None,
        region: str | None = None,
        hostname: str | None = None,
        config: ClientConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        seeds = _seed_nodes(nodes)
        self.env = env or _env("DEPLOY_ENV", "dev")
        self.zone = zone or _env("ZONE", "zone01")
        self.region = region or _env("REGION", "region01")
        self.hostname = hostname or _env("HOSTNAME", socket.gethostname())
        self.config = config or ClientConfig()
        self._rng = rng or random.Random()
        self.nodes = NodeList(seeds, self.zone, self._rng)
        self._backoff_policy = Backoff(
            base=self.config.backoff_base, cap=self.config.backoff_cap, rng=self._rng.random
        )
        self._transport = NodeTransport.for_config(self.config)
        self._state = WatchState()
        self._state.add(INFRA_APPID)
        self._signals: dict[str, asyncio.Event] = {}
        self._registrations: dict[tuple[str, str], AsyncRegistration] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._callers: list[AsyncCaller] = []
        self._from_app = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closed = False
        self._poller = Poller(
            env=self.env,
            hostname=self.hostname,
            nodes=self.nodes,
            transport=self._transport,
            state=self._state,
            backoff=self._backoff_policy,
            poll_hold=self.config.poll_hold,
            spawn=self.spawn,
            on_change=self._notify,
        )
        self.connected = self._poller.connected
        """Set while the last poll succeeded; cleared while every node fails."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "new"
        return f"<AsyncClient env={self.env} zone={self.zone} node={self.nodes.current} {state}>"

    # -- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect (bounded by ``config.start_timeout``) and start the poll loop."""
        if self._closed or self._started:
            raise DiscoverdError("an AsyncClient can be started once")
        self._started = True
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        try:
            await asyncio.wait_for(self._bootstrap(), self.config.start_timeout)
        except TimeoutError:
            await self.aclose()
            tried = ", ".join(self.nodes.seeds)
            raise Unavailable(
                f"no registry node answered within {self.config.start_timeout:g}s (tried {tried})"
            ) from None
        except BaseException:
            await self.aclose()
            raise
        self.spawn(self._poller.run())

    @property
    def polls_sent(self) -> int:
        """How many ``polls`` requests this client sent (observability, tests)."""
        return self._poller.polls_sent

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called (it stays True after :meth:`aclose`)."""
        return self._started

    async def _bootstrap(self) -> None:
        attempt = 0
        while True:
            try:
                answer = await self.call(
                    "GET", "fetch", [("env", self.env), ("appid", INFRA_APPID), ("status", "1")]
                )
                if answer.code == 0:
                    instances, _latest = decode_info(answer.data)
                    self._state.store(INFRA_APPID, instances, 0)
                    self.nodes.learn(instances)
                    return
                if answer.code == NOT_FOUND:
                    log.warning(
                        "no infra.discovery in env %r: is the client's env the servers' env?", self.env
                    )
                    return
                if answer.code in (UNAUTHORIZED, FORBIDDEN):  # retrying cannot help: fail start() now
                    raise error_for_code(answer.code, answer.message)
                raise Unavailable(f"{self.nodes.current}: answered {answer.code}")
            except (Unavailable, BadRequest) as exc:
                log.info("bootstrap: %s", exc)
                self.nodes.switch()
                await asyncio.sleep(self._backoff_policy.delay(attempt))
                attempt += 1

    async def aclose(self) -> None:
        """Cancel every active registration, stop the loop, close connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._poller.stop()  # before any await: the loop must not spawn a poll into a closing client
        for reg in list(self._registrations.values()):
            await reg.close()
        for caller in self._callers:
            await caller.aclose()
        for event in self._signals.values():
            event.set()
        if self._tg is not None:
            tg, self._tg = self._tg, None
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tg.__aexit__(None, None, None)
        await self._transport.aclose()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the client's task group; it is cancelled when the client closes.

        ``coro`` must not raise (a failure stops the client). Raises :class:`DiscoverdError` (and
        closes ``coro``) when the client is not running.
        """
        if self._tg is None or self._closed:
            coro.close()
            raise DiscoverdError("client is not running")
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def call(self, method: str, path: str, params: Params, *, timeout: float | None = None) -> Answer:
        """``method`` ``/discovery/<path>`` on the current node, its envelope decoded.

        The answer's ``code`` is not checked. Raises :class:`Unavailable` when the node did not
        answer (the client then switches to the next node); ``timeout`` defaults to
        ``config.request_timeout``.
        """
        node = self.nodes.current
        try:
            return await self._transport.call(node, method, path, params, timeout=timeout)
        except Unavailable:
            if self.nodes.current == node:
                self.nodes.switch()
            raise

    # -- registrations --------------------------------------------------------------------------------

    async def register(
        self,
        appid: str,
        addrs: Sequence[str],
        *,
        metadata: dict[str, str] | None = None,
        status: int = UP,
        version: str = "",
        hostname: str | None = None,
    ) -> AsyncRegistration:
        """Register ``appid`` at ``addrs`` and keep it alive; raises on refusal or when unreachable.

        The instance is keyed by the client's env/zone and ``hostname`` (default: the client's).
        """
        if self._closed or not self._started:
            raise DiscoverdError("client is not running")
        key = (appid, hostname or self.hostname)
        # closed and orphaned registrations leave the table here (they cannot be reopened)
        self._registrations = {k: r for k, r in self._registrations.items() if r.state is RegState.ACTIVE}
        if key in self._registrations:
            raise DiscoverdError(f"{appid}/{key[1]} is already registered by this client")
        ins = Instance(
            region=self.region,
            zone=self.zone,
            env=self.env,
            appid=appid,
            hostname=key[1],
            addrs=list(addrs),
            version=version,
            metadata=dict(metadata) if metadata is not None else None,
            status=status,
        )
        reg = AsyncRegistration(self, ins, renew_interval=self.config.renew_interval)
        await reg.open()
        self._from_app = self._from_app or appid
        self._registrations[key] = reg
        return reg

    def touched(self, appid: str) -> None:
        """Read-your-writes: after this client changed ``appid``, its next ``fetch`` asks a node
        instead of the cache (the long poll brings the change a moment later)."""
        view = self._state.apps.get(appid)
        if view is not None:
            view.dirty = True

    def caller(self, **kw: Any) -> AsyncCaller:
        """A load-balancing :class:`~discoverd.calling.caller.AsyncCaller` over this client (closed
        with the client); keyword arguments are the caller's. By default it sends the first
        registered appid as ``X-From-App`` and this client's hostname as ``X-From-Node``, and
        verifies HTTPS callees with ``config.tls_ca``."""
        kw.setdefault("from_app", self._from_app)
        kw.setdefault("from_node", self.hostname)
        kw.setdefault("tls_ca", self.config.tls_ca)
        caller = AsyncCaller(self, **kw)
        self._callers.append(caller)
        return caller

    @property
    def registrations(self) -> list[AsyncRegistration]:
        """The active registrations made through this client."""
        return [r for r in self._registrations.values() if r.state is RegState.ACTIVE]

    # -- discovery ------------------------------------------------------------------------------------

    def track(self, appid: str) -> None:
        """Add ``appid`` to the long poll's watch set now (``fetch``/``watch`` do it on first use)."""
        if self._state.add(appid):
            self._poller.poke()  # the next poll includes the new app at once

    async def fetch(self, appid: str, *, zone: str | None = None, status: int = UP) -> list[Instance]:
        """The instances of ``appid`` (UP by default), optionally of one zone.

        UP lists are served from the watched cache (the app is watched from the first call on; while
        every node is down the last good list is served). Other status masks ask a node directly.
        Treat the returned instances as read-only.
        """
        view = self._state.apps.get(appid)
        if status == UP and view is not None and view.known and not view.dirty:
            if zone is None:
                return list(view.instances)
            return [i for i in view.instances if i.zone == zone]
        answer = await self.call(
            "GET", "fetch", [("env", self.env), ("appid", appid), ("status", str(status))]
        )
        if answer.code == NOT_FOUND:
            instances: list[Instance] = []
        elif answer.code != 0:
            raise error_for_code(answer.code, answer.message)
        else:
            instances, _latest = decode_info(answer.data)
            if status == UP and self._started and not self._closed:
                self.track(appid)
                if self._state.store(appid, instances, 0):
                    self._notify(appid)
        return instances if zone is None else [i for i in instances if i.zone == zone]

    async def instances(self, appid: str) -> list[Instance]:
        """:meth:`InstanceSource.instances <discoverd.calling.source.InstanceSource.instances>`:
        ``fetch(appid)`` (UP, every zone, from the watched cache)."""
        return await self.fetch(appid)

    def subscribe(self, appid: str) -> AsyncIterator[list[Instance]]:
        """:meth:`InstanceSource.subscribe <discoverd.calling.source.InstanceSource.subscribe>`:
        ``watch(appid)``."""
        return self.watch(appid)

    def zone_weights(self, appid: str) -> Mapping[str, int] | None:
        """:meth:`InstanceSource.zone_weights <discoverd.calling.source.InstanceSource.zone_weights>`:
        the server's scheduler for this client's zone (:meth:`scheduler`)."""
        return self.scheduler(appid)

    def scheduler(self, appid: str) -> dict[str, int] | None:
        """The server's zone weights for this client's zone (provider zone → weight), if any (spec §7)."""
        view = self._state.apps.get(appid)
        if view is None or view.scheduler is None:
            return None
        return view.scheduler.get(self.zone)

    async def watch(self, appid: str) -> AsyncIterator[list[Instance]]:
        """Yield the UP instances of ``appid`` now (once known) and after every change.

        Changes are coalesced: a slow consumer gets the latest list, not every intermediate one.
        The iterator ends when the client closes.
        """
        self.track(appid)
        seen = 0
        while not self._closed:
            view = self._state.apps[appid]
            if view.known and view.version != seen:
                seen = view.version
                yield list(view.instances)
                continue
            event = self._signals.setdefault(appid, asyncio.Event())
            await event.wait()

    def _notify(self, appid: str) -> None:
        event = self._signals.pop(appid, None)
        if event is not None:
            event.set()
