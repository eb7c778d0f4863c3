"""The background work of :class:`~discoverd.backends.redis.RedisRegistry`: pub/sub, heartbeat, reaper.

:func:`run` is the registry's one runner task; it owns a TaskGroup of three loops and ends when the
registry's stop switch is set:

* **session loop** — one pub/sub connection at a time (:class:`_Session`): subscribe every followed app
  (waiting for Redis to confirm), *then* read them, then serve follow requests while a listener applies
  messages. Any failure ends the session; the next one starts after a capped exponential backoff with
  jitter and re-reads everything (the differences become events) and kicks the heartbeat.
* **heartbeat loop** — every ``heartbeat`` seconds (or at once after a reconnection): ``HEXISTS`` each own
  field, re-add the missing ones (``HSET``+``SETEX`` in one ``MULTI``, then ``PUBLISH``), ``SETEX`` the rest.
* **reaper loop** — every ``reap_interval`` seconds while connected: ``EXISTS`` each followed field that
  is not our own; ``HDEL`` the dead ones (the protocol's consumer-side reaper).

Redis is reached only through the registry's client object; no redis exception leaves these loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from discoverd.backends.redis import REDIS_ERRORS, RedisState, queue_node_write
from discoverd.backends.redis_state import KEY_TTL, alive_key, app_of_channel, channel, parse_message
from discoverd.core.backoff import Retry

if TYPE_CHECKING:
    from discoverd.backends.redis import RedisRegistry

log = logging.getLogger("discoverd.redis")

#: The pattern the "watch every app" subscription uses.
ALL_CHANNELS = "CH_*"


async def run(reg: RedisRegistry) -> None:
    """The runner: session, heartbeat and reaper loops in one TaskGroup, until ``reg._stop`` is set."""
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(_session_loop(reg)),
            tg.create_task(_heartbeat_loop(reg)),
            tg.create_task(_reaper_loop(reg)),
        ]
        await reg._stop.wait()
        # Cancel until done: on 3.11 an asyncio.timeout expiring at the same moment can swallow a cancel.
        while pending := [t for t in tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.1)


async def _session_loop(reg: RedisRegistry) -> None:
    retry = Retry(reg.config.backoff)
    loop = asyncio.get_running_loop()
    while not reg._stop.is_set():
        started = loop.time()
        session = _Session(reg)
        try:
            await session.run(retry)
        except* REDIS_ERRORS as group:
            log.warning(
                "redis: connection lost or refused (%r); serving the last known nodes", group.exceptions[0]
            )
        finally:
            await session.close()
        reg._state = RedisState.DISCONNECTED
        await asyncio.sleep(retry.failed(loop.time() - started))


class _Session:
    """One pub/sub connection and what was subscribed on it; ends by raising a Redis error."""

    def __init__(self, reg: RedisRegistry) -> None:
        self.reg = reg
        self.pubsub: Any = reg._redis.pubsub()
        self.waiters: dict[bytes, asyncio.Future[None]] = {}
        self.subscribed: set[str] = set()
        self.all = False

    async def run(self, retry: Retry) -> None:
        await self.pubsub.connect()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.listen())
            tg.create_task(self.serve(retry))

    async def close(self) -> None:
        for fut in self.waiters.values():
            fut.cancel()
        self.reg._loading.clear()  # reads cut short: the next session reads those apps again
        with contextlib.suppress(*REDIS_ERRORS):
            await self.pubsub.aclose()

    async def serve(self, retry: Retry) -> None:
        """Subscribe and read everything followed so far, then serve follow requests."""
        reg = self.reg
        apps = list(reg._followed)
        await self.subscribe(apps)
        if reg._follow_all:
            await self.follow_all()
        await self.load(apps)
        reg._state = RedisState.CONNECTED
        retry.succeeded()
        reg._kick.set()  # re-register at once what Redis may have lost
        log.info("redis: connected; %d app(s) subscribed and read", len(apps))
        while True:
            app = await reg._requests.get()
            if reg._stop.is_set():  # a cancellation swallowed inside redis-py must not keep us here
                return
            if app is None:
                if not self.all:
                    await self.follow_all()
            elif app not in self.subscribed:
                await self.subscribe([app])
                await self.load([app])

    async def listen(self) -> None:
        while not self.reg._stop.is_set():  # bounded reads, so a stop is seen even without a cancel
            msg = await self.pubsub.get_message(timeout=1.0)
            if not msg:
                continue
            kind = msg["type"]
            if kind in ("subscribe", "psubscribe"):
                fut = self.waiters.pop(msg["channel"], None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind in ("message", "pmessage"):
                self.on_message(msg["channel"], msg["data"])

    def on_message(self, name: bytes, data: bytes) -> None:
        app, change = app_of_channel(name), parse_message(data)
        if app is None or change is None:
            log.debug("redis: ignoring %r on %r", data, name)
            return
        reg = self.reg
        if reg._own(app, change[0]) is not None:
            return  # the echo of an own write, applied already (it may arrive after a later own write)
        if app in reg._followed:
            reg._apply(app, [change])
        elif reg._follow_all:
            reg._want(app, announce=True)  # an app born after the watch: its first read is news

    async def confirm(self, names: list[str], command: Any) -> None:
        """Send a (P)SUBSCRIBE and wait until Redis confirmed every name (subscribe before read)."""
        loop = asyncio.get_running_loop()
        futs = [self.waiters.setdefault(n.encode(), loop.create_future()) for n in names]
        await command(*names)
        async with asyncio.timeout(self.reg.config.timeout):
            await asyncio.gather(*futs)

    async def subscribe(self, apps: list[str]) -> None:
        if apps:
            await self.confirm([channel(a) for a in apps], self.pubsub.subscribe)
            self.subscribed.update(apps)

    async def follow_all(self) -> None:
        """``PSUBSCRIBE CH_*``, then follow every app hash that exists (their first read is silent)."""
        await self.confirm([ALL_CHANNELS], self.pubsub.psubscribe)
        self.all = True
        reg = self.reg
        async with asyncio.timeout(reg.config.timeout * 5):
            apps = [k.decode() async for k in reg._redis.scan_iter(count=1000, _type="hash")]
        new = [a for a in apps if a not in reg._followed]
        for app in new:
            reg._followed[app] = asyncio.Event()
        await self.subscribe(new)
        await self.load(new)
        reg._all_ready.set()

    async def load(self, apps: list[str]) -> None:
        """``HGETALL`` + ``EXISTS`` (+ ``HDEL`` of dead fields) for ``apps``; messages arriving meanwhile
        are buffered and applied after. Announces the differences for apps read before (or news)."""
        if not apps:
            return
        reg = self.reg
        for app in apps:
            reg._loading.setdefault(app, [])
        pipe = reg._redis.pipeline(transaction=False)
        for app in apps:
            pipe.hgetall(app)
        fields = [
            (app, addr.decode(), _weight(w))
            for app, h in zip(apps, await pipe.execute(), strict=True)
            for addr, w in h.items()
        ]
        alive = await _exists(reg, [(app, addr) for app, addr, _ in fields])
        dead = [(app, addr) for (app, addr, _), ok in zip(fields, alive, strict=True) if not ok]
        await _hdel(reg, [(app, addr) for app, addr in dead if reg._table.holds(app, addr) is None])
        for app in apps:
            buffered = reg._loading.pop(app, [])
            loaded = reg._followed[app]
            announce = loaded.is_set() or app in reg._announce
            nodes = {addr: w for (a, addr, w), ok in zip(fields, alive, strict=True) if a == app and ok}
            for (a, addr), (weight, _) in list(reg._own_writes.items()):
                if a == app and reg._own(a, addr) is not None:  # newer than what the read may show
                    nodes[addr] = weight
            reg._table.remote[app] = {addr: w for addr, w in nodes.items() if w > 0}
            reg._apply(app, buffered, silent=not announce)
            reg._announce.discard(app)
            loaded.set()


def _weight(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        return 0


async def _exists(reg: RedisRegistry, keys: list[tuple[str, str]]) -> list[bool]:
    if not keys:
        return []
    pipe = reg._redis.pipeline(transaction=False)
    for app, addr in keys:
        pipe.exists(alive_key(app, addr))
    return [bool(n) for n in await pipe.execute()]


async def _hdel(reg: RedisRegistry, fields: list[tuple[str, str]]) -> None:
    if fields:
        pipe = reg._redis.pipeline(transaction=False)
        for app, addr in fields:
            pipe.hdel(app, addr)
        await pipe.execute()
        log.info("redis: reaped %d dead node(s): %s", len(fields), fields[:5])


async def _heartbeat_loop(reg: RedisRegistry) -> None:
    loop = asyncio.get_running_loop()
    while not reg._stop.is_set():
        due = loop.time() + reg.config.heartbeat
        reg._kick.clear()
        try:
            async with asyncio.timeout(reg.config.timeout):
                await heartbeat(reg)
        except REDIS_ERRORS as exc:
            log.debug("redis: heartbeat failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, due - loop.time())):
                await reg._kick.wait()


async def heartbeat(reg: RedisRegistry) -> None:
    """One heartbeat of every own registration (under the write lock, so deregistrations win)."""
    if not reg._table.wanted():
        return
    async with reg._write_lock:
        keys = list(reg._table.wanted(settled=True))
        pipe = reg._redis.pipeline(transaction=False)
        for app, addr in keys:
            pipe.hexists(app, addr)
        present = await pipe.execute()
        wanted = reg._table.wanted()  # again: a deregistration may have happened meanwhile
        pipe = reg._redis.pipeline(transaction=True)
        readd = []
        for key, ok in zip(keys, present, strict=True):
            if key not in wanted:
                continue
            app, addr = key
            if ok:
                pipe.execute_command(
                    "SETEX", alive_key(app, addr), KEY_TTL, "1"
                )  # the wire verb (setex() warns)
            else:
                readd.append(key)
                reg._note_own(app, [(addr, wanted[key])])
                queue_node_write(pipe, app, addr, wanted[key])
        await pipe.execute()
    if readd:
        log.info("redis: re-registered %d node(s) missing from Redis: %s", len(readd), readd[:5])


async def _reaper_loop(reg: RedisRegistry) -> None:
    while not reg._stop.is_set():
        await asyncio.sleep(reg.config.reap_interval)
        if reg._state is not RedisState.CONNECTED:
            continue
        try:
            async with asyncio.timeout(reg.config.timeout):
                await reap(reg)
        except REDIS_ERRORS as exc:
            log.debug("redis: reaper failed: %r", exc)


async def reap(reg: RedisRegistry) -> None:
    """``EXISTS`` every followed field that is not ours; ``HDEL`` and forget the dead ones."""
    table = reg._table
    keys = [
        (app, addr)
        for app, loaded in reg._followed.items()
        if loaded.is_set() and app not in reg._loading
        for addr in table.remote.get(app, {})
        if table.holds(app, addr) is None
    ]
    alive = await _exists(reg, keys)
    dead = [key for key, ok in zip(keys, alive, strict=True) if not ok]
    await _hdel(reg, dead)
    for app, addr in dead:
        reg._apply(app, [(addr, 0)])
