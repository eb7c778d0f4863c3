"""The one module that imports the ``redis`` library: a client offering the protocol's round trips.

Every command the Redis backend sends is written here, one method per pipelined round trip (key and
message layout: :mod:`discoverd.backends.redis_state`, ``spec/redis-protocol.md``):

* :meth:`RedisClient.write_nodes` — registrations / removals (``HSET``+``SETEX`` or ``HDEL``+``DEL``, then
  ``PUBLISH``) and liveness refreshes (``SETEX``), all in one ``MULTI``;
* :meth:`RedisClient.read_apps` (``HGETALL``), :meth:`RedisClient.alive` (``EXISTS <app>_<addr>``),
  :meth:`RedisClient.has_fields` (``HEXISTS``), :meth:`RedisClient.delete_fields` (``HDEL``),
  :meth:`RedisClient.app_names` (``SCAN … TYPE hash``);
* :class:`Subscriber` — one pub/sub connection: ``SUBSCRIBE``, ``PSUBSCRIBE`` and what arrives on it.

The client never retries nor reconnects by itself (that is the caller's policy), commands time out after
the ``timeout`` given at construction, and every failure raises one of :data:`REDIS_ERRORS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.client import PubSub as RedisPubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from discoverd.backends.redis_state import KEY_TTL, alive_key, channel, encode_message

#: Every failure of a Redis round trip (protocol, connection, timeout); nothing else escapes a call.
REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)

#: A field of the protocol: ``(app, addr)``.
Field = tuple[str, str]
#: A write of the protocol: ``(app, addr, weight)``, weight 0 = removal.
NodeWrite = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Message:
    """One pub/sub message as it arrives.

    ``kind`` is Redis's type: ``"subscribe"`` / ``"psubscribe"`` (a confirmation: ``channel`` is the
    channel or pattern confirmed) or ``"message"`` / ``"pmessage"`` (an announcement: ``channel`` is the
    channel it was published on, ``data`` its payload); other kinds may be ignored.
    """

    kind: str
    channel: bytes
    data: bytes | int


class Subscriber:
    """One pub/sub connection (from :meth:`RedisClient.subscriber`); unusable after a failure or
    :meth:`aclose` — make a new one. A (P)SUBSCRIBE returns once sent; its confirmation arrives later
    as a :class:`Message` from :meth:`next_message`."""

    def __init__(self, pubsub: RedisPubSub) -> None:
        self._pubsub = pubsub

    async def connect(self) -> None:
        """Open the connection (before any subscription)."""
        await self._pubsub.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Send ``SUBSCRIBE`` for ``channels``."""
        await self._pubsub.subscribe(*channels)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        """Send ``PSUBSCRIBE`` for ``patterns``."""
        await self._pubsub.psubscribe(*patterns)

    async def next_message(self, timeout: float) -> Message | None:
        """The next message, or ``None`` when none arrived within ``timeout`` seconds."""
        msg = await self._pubsub.get_message(timeout=timeout)
        if not msg:
            return None
        return Message(msg["type"], msg["channel"], msg["data"])

    async def aclose(self) -> None:
        """Close the connection; raises one of :data:`REDIS_ERRORS` when that fails."""
        await self._pubsub.aclose()


class RedisClient:
    """A connection pool to one Redis database; ``connection`` as in
    :attr:`~discoverd.backends.redis_config.RedisURL.connection`, ``timeout`` seconds per connect and
    command. Connects lazily: constructing it does no I/O. Every method is one round trip (none for
    empty input) and raises one of :data:`REDIS_ERRORS` on failure."""

    def __init__(self, connection: Mapping[str, Any], *, timeout: float) -> None:
        self._redis = aioredis.Redis(
            **connection,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def subscriber(self) -> Subscriber:
        """A new pub/sub connection (not connected yet)."""
        return Subscriber(self._redis.pubsub())

    async def write_nodes(self, writes: Sequence[NodeWrite], *, refresh: Sequence[Field] = ()) -> None:
        """In one ``MULTI`` (so ``HSET`` and ``SETEX`` are never seen apart): ``SETEX <app>_<addr> 10 1``
        for every ``refresh`` field, then per write either a registration (``HSET``, ``SETEX``) or,
        for weight 0, a removal (``HDEL``, ``DEL``), each followed by its ``PUBLISH``."""
        if not writes and not refresh:
            return
        pipe = self._redis.pipeline(transaction=True)
        for app, addr in refresh:
            _setex_alive(pipe, app, addr)
        for app, addr, weight in writes:
            if weight > 0:
                pipe.hset(app, addr, str(weight))
                _setex_alive(pipe, app, addr)
            else:
                pipe.hdel(app, addr)
                pipe.delete(alive_key(app, addr))
            pipe.publish(channel(app), encode_message(addr, weight))
        await pipe.execute()

    async def read_apps(self, apps: Sequence[str]) -> list[dict[str, int]]:
        """``HGETALL`` of each app: ``addr -> weight`` per app, in order (a weight that is not an
        integer reads as 0, i.e. removed)."""
        if not apps:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for app in apps:
            pipe.hgetall(app)
        hashes = await pipe.execute()
        return [{addr.decode(): _weight(w) for addr, w in h.items()} for h in hashes]

    async def alive(self, fields: Sequence[Field]) -> list[bool]:
        """Per field, whether its liveness key ``<app>_<addr>`` exists (``EXISTS``)."""
        if not fields:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for app, addr in fields:
            pipe.exists(alive_key(app, addr))
        return [bool(n) for n in await pipe.execute()]

    async def has_fields(self, fields: Sequence[Field]) -> list[bool]:
        """Per field, whether the app's hash holds it (``HEXISTS``)."""
        if not fields:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for app, addr in fields:
            pipe.hexists(app, addr)
        return [bool(n) for n in await pipe.execute()]

    async def delete_fields(self, fields: Sequence[Field]) -> None:
        """``HDEL`` each field from its app's hash (no announcement: the consumer-side reaper's write)."""
        if not fields:
            return
        pipe = self._redis.pipeline(transaction=False)
        for app, addr in fields:
            pipe.hdel(app, addr)
        await pipe.execute()

    async def app_names(self) -> list[str]:
        """The names of every hash in the database (``SCAN`` with ``TYPE hash``, in batches of 1000);
        not bounded in time by itself — wrap it in a timeout."""
        return [k.decode() async for k in self._redis.scan_iter(count=1000, _type="hash")]

    async def aclose(self) -> None:
        """Close every connection of the pool."""
        await self._redis.aclose()


def _setex_alive(pipe: Pipeline, app: str, addr: str) -> None:
    # The wire verb SETEX itself (redis-py's setex() emits a deprecation warning).
    pipe.execute_command("SETEX", alive_key(app, addr), KEY_TTL, "1")


def _weight(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        return 0


__all__ = ["REDIS_ERRORS", "Field", "Message", "NodeWrite", "RedisClient", "Subscriber"]
