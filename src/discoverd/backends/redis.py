"""``redis://`` — the registry interface on Redis, wire-compatible with apigo.cc/go/discover and ssgo.

``RedisRegistry("redis://[:password@]host:port[/db]?app=a,b&heartbeat=1&reap=1&timeout=2")`` (db 15 when
the path is empty, as in the Go libraries). Protocol: ``spec/redis-protocol.md``; Instance mapping (what is
kept): :mod:`discoverd.backends.redis_state`.

* **Provider.** ``register`` writes ``HSET <app> <addr> <weight>``, ``SETEX <app>_<addr> 10 1``,
  ``PUBLISH CH_<app> "<addr> <weight>"``; every ``heartbeat`` seconds (1 s, like the seed; apigo uses 5 s)
  ``HEXISTS`` each own field: gone → the three writes again, else ``SETEX``. ``deregister`` / ``aclose``:
  ``HDEL`` + ``DEL`` + ``PUBLISH "<addr> 0"``; :meth:`RedisRegistry.orphan` stops without them (the key
  lapses within 10 s). ``ttl`` is accepted and not needed: the heartbeat keeps a registration alive.
  While Redis is unreachable, ``register``/``deregister`` still succeed locally; wanted registrations are
  written again as soon as Redis answers (never lost).
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
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.backends.redis_state import (
    KEY_TTL,
    LocalReg,
    NodeTable,
    alive_key,
    app_of_channel,
    channel,
    encode_message,
    node_addr,
    node_weight,
    parse_message,
)
from discoverd.backends.watch import Watch, WatchHub
from discoverd.core.backoff import Backoff
from discoverd.errors import BadRequest, ConfigError, Unavailable
from discoverd.model import Instance

log = logging.getLogger("discoverd.redis")

#: Every failure of a Redis round trip; none escapes this module.
REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)
#: The database of a URL without a path (the Go libraries' default).
DEFAULT_DB: Final = 15
#: Seconds during which messages about a field this object just wrote are taken as its own echoes.
OWN_GRACE: Final = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig:
    """Timings of :class:`RedisRegistry`.

    * ``heartbeat`` (1.0 s) — seconds between heartbeats, ``0 < heartbeat < 10`` (the key lives 10 s);
    * ``reap_interval`` (1.0 s) — seconds between liveness checks of the followed apps' fields;
    * ``timeout`` (2.0 s) — connect / command timeout, and how long a first ``get_service`` waits;
    * ``backoff`` (0.1 s doubling to 5 s, full jitter) — delays between reconnection attempts;
    * ``watch_queue`` (1024) — events a watcher may fall behind before it overflows.
    """

    heartbeat: float = 1.0
    reap_interval: float = 1.0
    timeout: float = 2.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.1, cap=5.0))
    watch_queue: int = 1024

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat < KEY_TTL:
            raise ConfigError(f"redis: heartbeat must be in (0, {KEY_TTL}) seconds, got {self.heartbeat!r}")
        if not (self.reap_interval > 0 and self.timeout > 0):
            raise ConfigError("redis: reap and timeout must be positive")


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed ``redis://`` URL: connection keyword arguments, timings, apps to follow at start."""

    connection: dict[str, Any]
    config: RedisConfig
    apps: tuple[str, ...]


def parse_redis_url(url: str) -> RedisURL:
    """``redis://[user][:password@]host[:port][/db]?app=&heartbeat=&reap=&timeout=``; :class:`ConfigError`."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ConfigError(f"{url!r}: expected redis://[:password@]host:port[/db]")
    try:
        port = parts.port or 6379
        db = int(parts.path.strip("/") or DEFAULT_DB)
    except ValueError:
        raise ConfigError(f"{url!r}: bad port or db") from None
    apps: list[str] = []
    timings: dict[str, Any] = {}
    names = {"heartbeat": "heartbeat", "reap": "reap_interval", "timeout": "timeout"}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "app":
            apps.extend(a for a in value.split(",") if a)
        elif key in names:
            try:
                timings[names[key]] = float(value)
            except ValueError:
                raise ConfigError(f"{url!r}: {key} must be a number of seconds") from None
        else:
            raise ConfigError(f"{url!r}: unknown parameter {key!r} (app, heartbeat, reap, timeout)")
    conn = {
        "host": parts.hostname,
        "port": port,
        "db": db,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    return RedisURL(conn, RedisConfig(**timings), tuple(dict.fromkeys(apps)))


class RedisState(enum.Enum):
    """The connection state of a :class:`RedisRegistry`.

    * ``STATIC`` — no Redis at all (:meth:`RedisRegistry.static`); stays so until closed;
    * ``IDLE`` — not started yet (starts on first use);
    * ``CONNECTING`` — first connection attempt under way;
    * ``CONNECTED`` — the pub/sub connection is up, every followed app subscribed and read;
    * ``DISCONNECTED`` — an attempt failed or the connection broke; retrying with backoff;
    * ``CLOSED`` — after :meth:`RedisRegistry.aclose` / :meth:`RedisRegistry.orphan`; never reopens.
    """

    STATIC = "static"
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


class RedisRegistry(Registry):
    """A :class:`~discoverd.backends.base.Registry` on Redis (or static, without); see the module docstring.

    ``url`` ``None`` = static mode. ``config`` overrides the URL's timings. Starts its tasks (one runner
    owning a TaskGroup: pub/sub session, heartbeat, reaper) on first use. Task-safe within one event loop.
    :meth:`aclose` deregisters what this object registered (graceful); :meth:`orphan` does not.
    """

    def __init__(self, url: str | None = None, *, config: RedisConfig | None = None) -> None:
        parsed = parse_redis_url(url) if url is not None else None
        self.config = config or (parsed.config if parsed else RedisConfig())
        self.url = url
        self._table = NodeTable()
        self._hub = WatchHub(self.config.watch_queue)
        self._state = RedisState.IDLE if parsed else RedisState.STATIC
        self._closed = False
        self._redis: Any = None
        if parsed is not None:
            self._redis = aioredis.Redis(
                **parsed.connection,
                socket_timeout=self.config.timeout,
                socket_connect_timeout=self.config.timeout,
                retry=RedisRetry(NoBackoff(), 0),
            )
        self._followed: dict[str, asyncio.Event] = {}  # app -> set once its first read is done
        self._follow_all = False
        self._all_ready = asyncio.Event()  # set once "every app" is subscribed and read
        self._requests: asyncio.Queue[str | None] = asyncio.Queue()  # apps to follow; None = all
        self._announce: set[str] = set()  # apps whose first read must produce events
        self._loading: dict[str, list[tuple[str, int]]] = {}  # app -> messages buffered during a read
        self._own_writes: dict[tuple[str, str], tuple[int, float]] = {}  # (app, addr) -> (weight, until)
        self._write_lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._session: Any = None  # the session object of redis_session, while one runs
        for app in parsed.apps if parsed else ():
            self._want(app, announce=False)

    @classmethod
    def static(cls, nodes: Mapping[str, Mapping[str, int]] | None = None) -> RedisRegistry:
        """A registry without Redis holding ``{app: {addr: weight}}`` (the seed's ``SetNode``)."""
        reg = cls(None)
        for app, addrs in (nodes or {}).items():
            for addr, weight in addrs.items():
                reg.set_node(app, addr, weight)
        return reg

    def __repr__(self) -> str:
        where = "static" if self._redis is None else repr(self.url)
        return f"<RedisRegistry {where} {self.state.value} followed={len(self._followed)}>"

    @property
    def state(self) -> RedisState:
        """The connection state (see :class:`RedisState`)."""
        return RedisState.CLOSED if self._closed else self._state

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
        app = instance.appid
        old = self._table.put_local(reg)
        writes: list[tuple[str, int]] = []
        if old is not None and old.addr != reg.addr and self._table.holds(app, old.addr) is None:
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
        reg = self._table.pop_local(instance.appid, instance.hostname)
        if reg is None:
            return
        self._start()
        writes = [] if self._table.holds(reg.instance.appid, reg.addr) else [(reg.addr, 0)]
        await self._write(reg.instance.appid, writes)

    async def get_service(self, appid: str) -> list[Instance]:
        """Copies of the visible instances of ``appid`` sorted by hostname. The first call for an app
        follows it (subscribe + read); :class:`Unavailable` when that read cannot happen. Afterwards it is
        served from memory, kept current by messages and the reaper, also while Redis is down."""
        self._check_open()
        await self.follow(appid)
        hosts = self._table.visible(appid)
        return [hosts[h].copy() for h in sorted(hosts)]

    async def list_services(self) -> list[str]:
        """Sorted apps with an instance: every hash in the database plus local/static ones; from memory
        (the known apps) when Redis is unreachable."""
        self._check_open()
        known = set(self._table.apps())
        if self._redis is None:
            return sorted(known)
        self._start()
        try:
            async with asyncio.timeout(self.config.timeout):
                hashes = {k.decode() async for k in self._redis.scan_iter(count=1000, _type="hash")}
        except REDIS_ERRORS as exc:
            log.debug("redis: list_services from memory: %r", exc)
            return sorted(known)
        return sorted(known | hashes)

    def watch(self, appid: str | None = None) -> Watch:
        """Events of ``appid`` (or of every app) from now on; follows the app(s) in the background."""
        self._check_open()
        w = self._hub.watch(appid)
        if self._redis is not None:
            self._start()
            if appid is None and not self._follow_all:
                self._follow_all = True
                self._requests.put_nowait(None)
            elif appid is not None:
                self._want(appid, announce=False)
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
        if self._redis is None:
            return
        self._start()
        if appid is None:
            if not self._follow_all:
                self._follow_all = True
                self._requests.put_nowait(None)
            loaded = self._all_ready
        else:
            loaded = self._want(appid, announce=False)
        if loaded.is_set():
            return
        if self._state is RedisState.DISCONNECTED:
            raise Unavailable(f"redis: {appid!r} was never read and Redis is unreachable")
        try:
            async with asyncio.timeout(self.config.timeout):
                await loaded.wait()
        except TimeoutError:
            raise Unavailable(f"redis: could not read {appid!r} within {self.config.timeout} s") from None

    def set_node(self, app: str, addr: str, weight: int) -> None:
        """Set a static node of ``app`` (``weight <= 0`` removes it), visible at once, never written to
        Redis nor reaped; works with or without Redis (the seed's ``SetNode``). Synchronous."""
        self._check_open()
        self._table.set_static(app, addr, weight)
        self._hub.publish(self._table.refresh(app))

    async def orphan(self) -> None:
        """Stop without deregistering (hard stop): the own fields lapse when their key expires (10 s)
        and consumers' reapers remove them. Idempotent; afterwards the registry is closed."""
        await self._shutdown(graceful=False)

    @property
    def watchers(self) -> int:
        """The number of open watch iterators."""
        return len(self._hub)

    # -- internals --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryClosed("the redis registry is closed")

    def _start(self) -> None:
        if self._runner is not None or self._redis is None:
            return
        from discoverd.backends.redis_session import run

        self._state = RedisState.CONNECTING
        self._runner = asyncio.get_running_loop().create_task(run(self), name=f"discoverd-redis-{id(self):x}")

    def _want(self, app: str, *, announce: bool) -> asyncio.Event:
        """Follow ``app`` from now on (queued for the session); returns its "read once" event."""
        loaded = self._followed.get(app)
        if loaded is None:
            loaded = self._followed[app] = asyncio.Event()
            if announce:
                self._announce.add(app)
            self._requests.put_nowait(app)
        return loaded

    def _apply(self, app: str, changes: Iterable[tuple[str, int]], *, silent: bool = False) -> None:
        """Apply ``(addr, weight)`` changes of ``app`` (messages, own writes, reaps) to the remote view —
        or buffer them while a read of the app is in flight — and publish the resulting events."""
        buffered = self._loading.get(app)
        if buffered is not None:
            buffered.extend(changes)
            return
        for addr, weight in changes:
            self._table.set_remote(app, addr, weight)
        events = self._table.refresh(app)
        if not silent:
            self._hub.publish(events)

    def _note_own(self, app: str, writes: Iterable[tuple[str, int]]) -> None:
        """Remember own writes for :data:`OWN_GRACE` seconds: until then messages and reads about those
        fields are stale echoes of what was already applied locally, and are ignored."""
        until = asyncio.get_running_loop().time() + OWN_GRACE
        for addr, weight in writes:
            self._own_writes[(app, addr)] = (weight, until)

    def _own(self, app: str, addr: str) -> int | None:
        """The weight this object last wrote for ``addr`` of ``app`` within the grace period."""
        entry = self._own_writes.get((app, addr))
        if entry is None:
            return None
        if asyncio.get_running_loop().time() > entry[1]:
            del self._own_writes[(app, addr)]
            return None
        return entry[0]

    async def _write(self, app: str, writes: list[tuple[str, int]]) -> None:
        """Announce own changes (weight 0 = removal) to Redis and apply them locally at once."""
        self._note_own(app, writes)  # a read in flight re-applies them over what it got (see redis_session)
        for addr, weight in writes:
            self._table.set_remote(app, addr, weight)
        self._hub.publish(self._table.refresh(app))
        if self._redis is None or not writes:
            return
        async with self._write_lock:
            try:
                pipe = self._redis.pipeline(transaction=True)  # HSET+SETEX never seen apart
                for addr, weight in writes:
                    queue_node_write(pipe, app, addr, weight)
                await pipe.execute()
            except REDIS_ERRORS as exc:
                log.warning("redis: write of %s %s deferred until Redis answers: %r", app, writes, exc)

    async def _shutdown(self, *, graceful: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub.close()
        if self._redis is None:
            return
        if graceful:
            wanted = self._table.wanted()
            self._table.local.clear()
            if wanted:
                with contextlib.suppress(*REDIS_ERRORS):
                    async with self._write_lock, asyncio.timeout(self.config.timeout):
                        pipe = self._redis.pipeline(transaction=True)
                        for app, addr in wanted:
                            queue_node_write(pipe, app, addr, 0)
                        await pipe.execute()
        self._table.local.clear()
        self._stop.set()
        self._kick.set()
        self._requests.put_nowait("")  # wakes the session's request loop, which then sees the stop
        if self._runner is not None:
            await self._runner
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.aclose()


def queue_node_write(pipe: Any, app: str, addr: str, weight: int) -> None:
    """Queue the protocol's writes for ``addr`` of ``app`` on ``pipe``: registration (weight > 0) or
    removal (weight 0), announcement last."""
    if weight > 0:
        pipe.hset(app, addr, str(weight))
        pipe.execute_command("SETEX", alive_key(app, addr), KEY_TTL, "1")  # the wire verb (setex() warns)
    else:
        pipe.hdel(app, addr)
        pipe.delete(alive_key(app, addr))
    pipe.publish(channel(app), encode_message(addr, weight))


__all__ = [
    "DEFAULT_DB",
    "REDIS_ERRORS",
    "RedisConfig",
    "RedisRegistry",
    "RedisState",
    "RedisURL",
    "app_of_channel",
    "parse_message",
    "parse_redis_url",
    "queue_node_write",
]
