"""The background work of a :class:`~discoverd.backends.redis.RedisRegistry`: pub/sub, heartbeat, reaper.

:func:`run` is the registry's one runner task. It gets the registry's :class:`RedisClient` and
:class:`SharedState` and owns a TaskGroup of three loops, which end once ``shared.stop`` is set:

* **session loop** — one pub/sub connection at a time (:class:`Session`), in this order: connect;
  subscribe every followed app and wait for Redis to confirm; ``PSUBSCRIBE CH_*`` and follow every app
  hash if every app is wanted; *then* read the apps (``HGETALL``, ``EXISTS`` per field, reap the dead
  ones); mark the registry connected and kick the heartbeat; then serve follow requests (subscribe,
  then read) while a listener applies messages. Any Redis failure ends the session; the next one starts
  after a capped exponential backoff with jitter and reads everything again (the differences become
  events).
* **heartbeat loop** — every ``heartbeat`` seconds (or at once when kicked): ``HEXISTS`` each own field,
  write the missing ones again (``HSET``+``SETEX``+``PUBLISH``), ``SETEX`` the rest, in one ``MULTI``.
* **reaper loop** — every ``reap_interval`` seconds while connected: ``EXISTS`` each followed field that
  is not our own; reap the dead ones and apply their removal (the protocol's consumer-side reaper).

To *reap* is :meth:`RedisClient.reap`: atomically per field, check the liveness key again, ``HDEL`` the
field and, only when that ``HDEL`` removed it, ``PUBLISH CH_<app> "<addr> 0"`` — so every consumer,
Go ones included (ssgo's reaper deletes without announcing), learns of the death at once, and of two
reapers racing for one field exactly one announces it.

No Redis error leaves these loops: a failed session is retried, a failed heartbeat or reap waits for the
next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from discoverd.backends.redis_client import REDIS_ERRORS, Field, NodeWrite, PubSubConnection, RedisClient
from discoverd.backends.redis_shared import WAKE, RedisState, SharedState
from discoverd.backends.redis_state import app_of_channel, channel, parse_message
from discoverd.core.backoff import Retry

log = logging.getLogger("discoverd.redis")

#: The pattern the "watch every app" subscription uses.
ALL_CHANNELS: Final = "CH_*"
#: Seconds a listener waits for a message before it looks at the stop switch again.
LISTEN_POLL: Final = 1.0


async def run(client: RedisClient, shared: SharedState) -> None:
    """The runner: session, heartbeat and reaper loops in one TaskGroup, until ``shared.stop`` is set
    (see :meth:`SharedState.request_stop`). Returns once all three ended; raises nothing of Redis's."""
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(_session_loop(client, shared)),
            tg.create_task(_heartbeat_loop(client, shared)),
            tg.create_task(_reaper_loop(client, shared)),
        ]
        await shared.stop.wait()
        # Cancel until done: on 3.11 an asyncio.timeout expiring at the same moment can swallow a cancel.
        while pending := [t for t in tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.1)


# -- the session ----------------------------------------------------------------------------------------


async def _session_loop(client: RedisClient, shared: SharedState) -> None:
    """One :class:`Session` after another, with backoff between them, until stopped."""
    retry = Retry(shared.config.backoff)
    loop = asyncio.get_running_loop()
    while not shared.stop.is_set():
        started = loop.time()
        session = Session(client, shared)
        try:
            await session.run(retry)
        except* REDIS_ERRORS as group:
            log.warning(
                "redis: connection lost or refused (%r); serving the last known nodes", group.exceptions[0]
            )
        finally:
            await session.close()
        shared.state = RedisState.DISCONNECTED
        await asyncio.sleep(retry.failed(loop.time() - started))


class Session:
    """One pub/sub connection and what was subscribed on it. :meth:`run` ends by raising a Redis error
    (or returns once ``shared.stop`` is set); :meth:`close` must follow either way."""

    def __init__(self, client: RedisClient, shared: SharedState) -> None:
        self.client = client
        self.shared = shared
        self.subscriber: PubSubConnection = client.subscriber()
        self.waiters: dict[bytes, asyncio.Future[None]] = {}  # channel/pattern -> its confirmation
        self.subscribed: set[str] = set()  # apps subscribed on this connection
        self.all = False  # CH_* subscribed on this connection

    async def run(self, retry: Retry) -> None:
        """Connect, then listen and serve side by side (see the module docstring for the order)."""
        await self.subscriber.connect()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.listen())
            tg.create_task(self.serve(retry))

    async def close(self) -> None:
        """Fail pending confirmations, drop buffers of reads cut short (the next session reads those
        apps again), close the connection."""
        for fut in self.waiters.values():
            fut.cancel()
        self.shared.loading.clear()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.subscriber.aclose()

    async def serve(self, retry: Retry) -> None:
        """Subscribe and read everything followed so far, report connected, then serve follow requests."""
        shared = self.shared
        apps = list(shared.followed)
        await self.subscribe(apps)
        if shared.follow_all:
            await self.follow_all()
        await self.load(apps)
        shared.state = RedisState.CONNECTED
        retry.succeeded()
        shared.kick.set()  # re-register at once what Redis may have lost
        log.info("redis: connected; %d app(s) subscribed and read", len(apps))
        while True:
            app = await shared.requests.get()
            if shared.stop.is_set():  # a cancellation swallowed inside redis-py must not keep us here
                return
            if app is None:
                if not self.all:
                    await self.follow_all()
            elif app != WAKE and app not in self.subscribed:
                await self.subscribe([app])
                await self.load([app])

    async def listen(self) -> None:
        """Resolve subscription confirmations and apply announcements, until stopped or failed."""
        while not self.shared.stop.is_set():  # bounded reads, so a stop is seen even without a cancel
            msg = await self.subscriber.next_message(timeout=LISTEN_POLL)
            if msg is None:
                continue
            if msg.kind in ("subscribe", "psubscribe"):
                fut = self.waiters.pop(msg.channel, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif msg.kind in ("message", "pmessage") and isinstance(msg.data, bytes):
                self.on_message(msg.channel, msg.data)

    def on_message(self, name: bytes, data: bytes) -> None:
        """Apply the announcement ``data`` on channel ``name``; malformed ones and echoes of own writes
        are ignored; with every app followed, a message of an unknown app starts following it."""
        app, change = app_of_channel(name), parse_message(data)
        if app is None or change is None:
            log.debug("redis: ignoring %r on %r", data, name)
            return
        shared = self.shared
        if shared.own_weight(app, change[0]) is not None:
            return  # the echo of an own write, applied already (it may arrive after a later own write)
        if app in shared.followed:
            shared.apply(app, [change])
        elif shared.follow_all:
            shared.want(app, announce=True)  # an app born after the watch: its first read is news

    async def confirm(self, names: list[str], *, pattern: bool) -> None:
        """Send a SUBSCRIBE (PSUBSCRIBE with ``pattern``) and wait until Redis confirmed every name, so
        that nothing published after this returns can be missed."""
        loop = asyncio.get_running_loop()
        futs = [self.waiters.setdefault(n.encode(), loop.create_future()) for n in names]
        if pattern:
            await self.subscriber.psubscribe(names)
        else:
            await self.subscriber.subscribe(names)
        async with asyncio.timeout(self.shared.config.timeout):
            await asyncio.gather(*futs)

    async def subscribe(self, apps: list[str]) -> None:
        """``SUBSCRIBE CH_<app>`` for ``apps``, confirmed."""
        if apps:
            await self.confirm([channel(a) for a in apps], pattern=False)
            self.subscribed.update(apps)

    async def follow_all(self) -> None:
        """``PSUBSCRIBE CH_*``, then follow every app hash that exists (their first read is silent)."""
        await self.confirm([ALL_CHANNELS], pattern=True)
        self.all = True
        shared = self.shared
        async with asyncio.timeout(shared.config.timeout * 5):
            apps = await self.client.app_names()
        new = [a for a in apps if a not in shared.followed]
        for app in new:
            shared.followed[app] = asyncio.Event()
        await self.subscribe(new)
        await self.load(new)
        shared.all_ready.set()

    async def load(self, apps: list[str]) -> None:
        """Read ``apps`` (see :func:`_read_alive`); messages arriving meanwhile are buffered and applied
        after. Sets each app's "read once" event; announces the differences for apps read before (or
        listed in ``shared.announce``), sets the baseline silently for the others."""
        if not apps:
            return
        shared = self.shared
        for app in apps:
            shared.loading.setdefault(app, [])  # from now on shared.apply() buffers this app's changes
        nodes = await _read_alive(self.client, shared, apps)
        for app in apps:
            buffered = shared.loading.pop(app, [])
            loaded = shared.followed[app]
            announce = loaded.is_set() or app in shared.announce
            merged = {**nodes[app], **shared.own_weights(app)}  # own writes are newer than the read
            shared.table.remote[app] = {addr: w for addr, w in merged.items() if w > 0}
            shared.apply(app, buffered, silent=not announce)
            shared.announce.discard(app)
            loaded.set()


async def _read_alive(client: RedisClient, shared: SharedState, apps: list[str]) -> dict[str, dict[str, int]]:
    """``HGETALL`` each app and ``EXISTS`` each field's liveness key; reap the dead fields no own
    registration holds. Returns ``app -> {addr: weight}`` of the alive fields."""
    hashes = dict(zip(apps, await client.read_apps(apps), strict=True))
    fields = [(app, addr) for app, nodes in hashes.items() for addr in nodes]
    alive = dict(zip(fields, await client.alive(fields), strict=True))
    await _reap_dead(client, [f for f, ok in alive.items() if not ok and shared.table.holds(*f) is None])
    return {app: {a: w for a, w in nodes.items() if alive[(app, a)]} for app, nodes in hashes.items()}


async def _reap_dead(client: RedisClient, fields: list[Field]) -> list[Field]:
    """Reap ``fields`` (see the module docstring); returns those that are gone (not alive again)."""
    if not fields:
        return []
    reaped = await client.reap(fields)
    if reaped.announced:
        log.info(
            "redis: reaped and announced %d dead node(s): %s", len(reaped.announced), reaped.announced[:5]
        )
    return reaped.gone


# -- the heartbeat --------------------------------------------------------------------------------------


async def _heartbeat_loop(client: RedisClient, shared: SharedState) -> None:
    """:func:`heartbeat` every ``heartbeat`` seconds, or at once when ``shared.kick`` is set."""
    loop = asyncio.get_running_loop()
    while not shared.stop.is_set():
        due = loop.time() + shared.config.heartbeat
        shared.kick.clear()
        try:
            async with asyncio.timeout(shared.config.timeout):
                await heartbeat(client, shared)
        except REDIS_ERRORS as exc:
            log.debug("redis: heartbeat failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, due - loop.time())):
                await shared.kick.wait()


async def heartbeat(client: RedisClient, shared: SharedState) -> None:
    """One heartbeat of every own registration whose first write was attempted: ``HEXISTS`` each field,
    then in one ``MULTI`` refresh the liveness key of the present ones and write the missing ones again.
    Runs under ``shared.write_lock`` and skips fields deregistered meanwhile, so deregistrations win."""
    if not shared.table.wanted():
        return
    async with shared.write_lock:
        keys = list(shared.table.wanted(settled=True))
        present = await client.has_fields(keys)
        wanted = shared.table.wanted()  # again: a deregistration may have happened meanwhile
        refresh: list[Field] = []
        readd: list[NodeWrite] = []
        for (app, addr), ok in zip(keys, present, strict=True):
            if (app, addr) not in wanted:
                continue
            if ok:
                refresh.append((app, addr))
            else:
                readd.append((app, addr, wanted[(app, addr)]))
                shared.note_own(app, [(addr, wanted[(app, addr)])])
        await client.write_nodes(readd, refresh=refresh)
    if readd:
        log.info("redis: re-registered %d node(s) missing from Redis: %s", len(readd), readd[:5])


# -- the reaper -----------------------------------------------------------------------------------------


async def _reaper_loop(client: RedisClient, shared: SharedState) -> None:
    """:func:`reap` every ``reap_interval`` seconds while connected."""
    while not shared.stop.is_set():
        await asyncio.sleep(shared.config.reap_interval)
        if shared.state is not RedisState.CONNECTED:
            continue
        try:
            async with asyncio.timeout(shared.config.timeout):
                await reap(client, shared)
        except REDIS_ERRORS as exc:
            log.debug("redis: reaper failed: %r", exc)


async def reap(client: RedisClient, shared: SharedState) -> None:
    """``EXISTS`` the liveness key of every field of the apps read and not being read, except own ones;
    reap the dead fields and apply the removal of those gone (events for the watchers)."""
    table = shared.table
    keys = [
        (app, addr)
        for app, loaded in shared.followed.items()
        if loaded.is_set() and app not in shared.loading
        for addr in table.remote.get(app, {})
        if table.holds(app, addr) is None
    ]
    alive = await client.alive(keys)
    dead = [key for key, ok in zip(keys, alive, strict=True) if not ok]
    for app, addr in await _reap_dead(client, dead):
        shared.apply(app, [(addr, 0)])


__all__ = ["ALL_CHANNELS", "Session", "heartbeat", "reap", "run"]
