"""``redis://`` — the registry interface on Redis, wire-compatible with apigo.cc/go/discover and ssgo.

``RedisRegistry("redis://[:password@]host:port[/db]?app=a,b&heartbeat=1&reap=1&timeout=2")`` (db 15 when
the path is empty, as in the Go libraries; see :mod:`discoverd.backends.redis_config`). Protocol:
``spec/redis-protocol.md``; Instance mapping (what is kept): :mod:`discoverd.backends.redis_state`.

* **Provider.** ``register`` writes ``HSET <app> <addr> <weight>``, ``SETEX <app>_<addr> 10 1``,
  ``PUBLISH CH_<app> "<addr> <weight>"``; every ``heartbeat`` seconds (1 s, the protocol's period; later
  apigo versions use 5 s) ``HEXISTS`` each own field: gone → the three writes again, else ``SETEX``.
  ``deregister`` / ``aclose``: ``HDEL`` + ``DEL`` + ``PUBLISH "<addr> 0"``; :meth:`RedisRegistry.orphan`
  stops without them (the key lapses within 10 s). ``ttl`` is accepted and not needed: the heartbeat
  keeps a registration alive. While Redis is unreachable, ``register``/``deregister`` still succeed
  locally; wanted registrations are written again as soon as Redis answers (never lost).
* **Consumer.** An app is *followed* from its first ``get_service``/``watch``/``follow`` (or ``?app=``):
  ``SUBSCRIBE CH_<app>`` on a dedicated pub/sub connection, confirmed, **then** ``HGETALL`` + ``EXISTS`` per
  field (dead fields are ``HDEL``ed). Messages are applied as they come (buffered while a read is in
  flight); a reaper ``EXISTS``-checks every followed field each ``reap`` seconds (1 s). ``watch()`` (all
  apps) adds ``PSUBSCRIBE CH_*`` and follows every existing app hash. After a reconnection (capped
  exponential backoff with jitter) everything is subscribed and re-read again, and the differences become
  events. During an outage the last known nodes keep being served.
* **Events.** The first read of an app sets its baseline silently (a watcher sees changes after it); for
  a gap-free start do ``w = reg.watch(app)`` then ``await reg.get_service(app)``. Re-reads after a
  reconnection, messages, the reaper and local writes produce events.
* **Static.** :meth:`RedisRegistry.static` / :meth:`RedisRegistry.set_node` work without any Redis.

The modules of the backend, each importing only those after it: this one (the public calls);
:mod:`~discoverd.backends.redis_session` (what runs in the background: pub/sub session, heartbeat,
reaper); :mod:`~discoverd.backends.redis_shared` (:class:`SharedState`, the state this registry hands to
the session); :mod:`~discoverd.backends.redis_client` (the only user of the ``redis`` library: every
command sent); :mod:`~discoverd.backends.redis_config` (URL and timings);
:mod:`~discoverd.backends.redis_state` (wire format and node table, pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.backends.redis_client import REDIS_ERRORS, RedisClient
from discoverd.backends.redis_config import DEFAULT_DB, RedisConfig, RedisURL, parse_redis_url
from discoverd.backends.redis_session import run
from discoverd.backends.redis_shared import RedisState, SharedState
from discoverd.backends.redis_state import LocalReg, node_addr, node_weight
from discoverd.backends.watch import Watch
from discoverd.errors import BadRequest, Unavailable
from discoverd.model import Instance

log = logging.getLogger("discoverd.redis")


class RedisRegistry(Registry):
    """A :class:`~discoverd.backends.base.Registry` on Redis (or static, without); see the module docstring.

    ``url`` ``None`` = static mode. ``config`` overrides the URL's timings. Starts its runner task
    (:func:`discoverd.backends.redis_session.run`: pub/sub session, heartbeat, reaper) on first use and
    shares one :class:`SharedState` with it. Task-safe within one event loop. :meth:`aclose` deregisters
    what this object registered (graceful); :meth:`orphan` does not.
    """

    def __init__(self, url: str | None = None, *, config: RedisConfig | None = None) -> None:
        super().__init__()
        parsed = parse_redis_url(url) if url is not None else None
        self.config = config or (parsed.config if parsed else RedisConfig())
        self.url = url
        self._client: RedisClient | None = None  # None = static mode
        if parsed is not None:
            self._client = RedisClient(parsed.connection, timeout=self.config.timeout)
        state = RedisState.IDLE if parsed else RedisState.STATIC
        self._shared = SharedState(config=self.config, state=state)
        self._closed = False
        self._runner: asyncio.Task[None] | None = None
        for app in parsed.apps if parsed else ():
            self._shared.want(app, announce=False)

    @classmethod
    def static(cls, nodes: Mapping[str, Mapping[str, int]] | None = None) -> RedisRegistry:
        """A registry without Redis holding ``{app: {addr: weight}}`` (the Go libraries' ``SetNode``)."""
        reg = cls(None)
        for app, addrs in (nodes or {}).items():
            for addr, weight in addrs.items():
                reg.set_node(app, addr, weight)
        return reg

    def __repr__(self) -> str:
        where = "static" if self._client is None else repr(self.url)
        return f"<RedisRegistry {where} {self.state.value} followed={len(self._shared.followed)}>"

    @property
    def state(self) -> RedisState:
        """The connection state (see :class:`RedisState`)."""
        return RedisState.CLOSED if self._closed else self._shared.state

    # -- the Registry interface -------------------------------------------------------------------------

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        """Register ``instance`` (a copy) and keep it alive; see the module docstring. Never raises for
        Redis being down (the registration is written when it is back); :class:`BadRequest` when the
        instance has no usable address or weight."""
        self._check_open()
        if not instance.appid or not instance.hostname:
            raise BadRequest("register: appid and hostname must not be empty")
        if ttl is not None and not ttl > 0:
            raise BadRequest(f"register: ttl must be a positive number of seconds, got {ttl!r}")
        reg = LocalReg(instance.copy(), node_addr(instance), node_weight(instance))
        self._start()
        app, table = instance.appid, self._shared.table
        old = table.put_local(reg)
        writes: list[tuple[str, int]] = []
        if old is not None and old.addr != reg.addr and table.holds(app, old.addr) is None:
            writes.append((old.addr, 0))
        writes.append((reg.addr, reg.weight))
        try:
            await self._write(app, writes)
        finally:
            reg.pending = False

    async def deregister(self, instance: Instance) -> None:
        """Withdraw a registration made through this object (others are ignored: a provider elsewhere
        would re-add itself within a heartbeat). Never raises for Redis being down."""
        self._check_open()
        table = self._shared.table
        reg = table.pop_local(instance.appid, instance.hostname)
        if reg is None:
            return
        self._start()
        writes = [] if table.holds(reg.instance.appid, reg.addr) else [(reg.addr, 0)]
        await self._write(reg.instance.appid, writes)

    async def get_service(self, appid: str) -> list[Instance]:
        """Copies of the visible instances of ``appid`` sorted by hostname. The first call for an app
        follows it (subscribe + read); :class:`Unavailable` when that read cannot happen. Afterwards it is
        served from memory, kept current by messages and the reaper, also while Redis is down."""
        self._check_open()
        await self.follow(appid)
        hosts = self._shared.table.visible(appid)
        return [hosts[h].copy() for h in sorted(hosts)]

    async def list_services(self) -> list[str]:
        """Sorted apps with an instance: every hash in the database plus local/static ones; from memory
        (the known apps) when Redis is unreachable."""
        self._check_open()
        known = set(self._shared.table.apps())
        if self._client is None:
            return sorted(known)
        self._start()
        try:
            async with asyncio.timeout(self.config.timeout):
                hashes = set(await self._client.app_names())
        except REDIS_ERRORS as exc:
            log.debug("redis: list_services from memory: %r", exc)
            return sorted(known)
        return sorted(known | hashes)

    def watch(self, appid: str | None = None) -> Watch:
        """Events of ``appid`` (or of every app) from now on; follows the app(s) in the background."""
        self._check_open()
        w = self._shared.hub.watch(appid)
        if self._client is not None:
            self._start()
            if appid is None:
                self._shared.want_all()
            else:
                self._shared.want(appid, announce=False)
        return w

    async def aclose(self) -> None:
        """Deregister every own registration (best effort, bounded by ``timeout``), stop, end watchers."""
        await self._shutdown(graceful=True)

    # -- beyond the interface ---------------------------------------------------------------------------

    async def follow(self, appid: str | None = None) -> None:
        """Make sure ``appid`` (``None``: every app, as ``watch()`` does) is subscribed and was read once
        (what the first ``get_service`` does); after it returns, every later change reaches the watchers.
        :class:`Unavailable` when Redis cannot be reached (at once when an attempt already failed, else
        after ``timeout``)."""
        self._check_open()
        if self._client is None:
            return
        self._start()
        shared = self._shared
        loaded = shared.want_all() if appid is None else shared.want(appid, announce=False)
        if loaded.is_set():
            return
        if shared.state is RedisState.DISCONNECTED:
            raise Unavailable(f"redis: {appid!r} was never read and Redis is unreachable")
        try:
            async with asyncio.timeout(self.config.timeout):
                await loaded.wait()
        except TimeoutError:
            raise Unavailable(f"redis: could not read {appid!r} within {self.config.timeout} s") from None

    def set_node(self, app: str, addr: str, weight: int) -> None:
        """Set a static node of ``app`` (``weight <= 0`` removes it), visible at once, never written to
        Redis nor reaped; works with or without Redis (the Go libraries' ``SetNode``). Synchronous."""
        self._check_open()
        table = self._shared.table
        table.set_static(app, addr, weight)
        self._shared.hub.publish(table.refresh(app))

    async def orphan(self) -> None:
        """Stop without deregistering (hard stop): the own fields lapse when their key expires (10 s)
        and consumers' reapers remove them. Idempotent; afterwards the registry is closed."""
        await self._shutdown(graceful=False)

    @property
    def watchers(self) -> int:
        """The number of open watch iterators."""
        return len(self._shared.hub)

    # -- internals --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryClosed("the redis registry is closed")

    def _start(self) -> None:
        """Start the runner task on first use (never in static mode)."""
        if self._runner is not None or self._client is None:
            return
        self._shared.state = RedisState.CONNECTING
        self._runner = asyncio.get_running_loop().create_task(
            run(self._client, self._shared), name=f"discoverd-redis-{id(self):x}"
        )

    async def _write(self, app: str, writes: list[tuple[str, int]]) -> None:
        """Announce own ``(addr, weight)`` changes of ``app`` (weight 0 = removal) to Redis and apply
        them locally at once. A failed write is logged, not raised: the heartbeat writes wanted
        registrations again once Redis answers."""
        shared = self._shared
        shared.note_own(app, writes)  # a read in flight puts them over what it got (Session.load)
        for addr, weight in writes:
            shared.table.set_remote(app, addr, weight)
        shared.hub.publish(shared.table.refresh(app))
        if self._client is None or not writes:
            return
        async with shared.write_lock:
            try:
                await self._client.write_nodes([(app, addr, weight) for addr, weight in writes])
            except REDIS_ERRORS as exc:
                log.warning("redis: write of %s %s deferred until Redis answers: %r", app, writes, exc)

    async def _shutdown(self, *, graceful: bool) -> None:
        """Close once: close the callers, end the watchers; if ``graceful``, remove the own fields from
        Redis (bounded by ``timeout``, errors ignored); stop the runner and close the client."""
        if self._closed:
            return
        self._closed = True
        await self.close_callers()
        shared = self._shared
        shared.hub.close()
        if self._client is None:
            return
        if graceful:
            await self._remove_own_fields(self._client)
        shared.table.local.clear()
        shared.request_stop()
        if self._runner is not None:
            await self._runner
        with contextlib.suppress(*REDIS_ERRORS):
            await self._client.aclose()

    async def _remove_own_fields(self, client: RedisClient) -> None:
        """Forget every own registration and remove its field from Redis (best effort, one ``MULTI``)."""
        shared = self._shared
        wanted = shared.table.wanted()
        shared.table.local.clear()
        if not wanted:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            async with shared.write_lock, asyncio.timeout(self.config.timeout):
                await client.write_nodes([(app, addr, 0) for app, addr in wanted])


__all__ = ["DEFAULT_DB", "RedisConfig", "RedisRegistry", "RedisState", "RedisURL", "parse_redis_url"]
