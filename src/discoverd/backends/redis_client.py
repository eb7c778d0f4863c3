"""The one module that imports the ``redis`` library: a client offering the protocol's round trips.

Every command the Redis backend sends is written here, one method per pipelined round trip (key and
message layout: :mod:`discoverd.backends.redis_state`, ``spec/redis-protocol.md``):

* :meth:`RedisClient.write_nodes` — registrations / removals (``HSET``+``SETEX`` or ``HDEL``+``DEL``, then
  ``PUBLISH``) and liveness refreshes (``SETEX``), all in one ``MULTI``;
* :meth:`RedisClient.read_apps` (``HGETALL``), :meth:`RedisClient.alive` (``EXISTS <app>_<addr>``),
  :meth:`RedisClient.has_fields` (``HEXISTS``), :meth:`RedisClient.app_names` (``SCAN … TYPE hash``);
* :meth:`RedisClient.reap` — the consumer-side reaper's write, one server-side script per field:
  ``EXISTS`` the liveness key, ``HDEL`` the field, ``PUBLISH "<addr> 0"`` only when ``HDEL`` removed it;
* :class:`PubSubConnection` — one pub/sub connection: ``SUBSCRIBE``, ``PSUBSCRIBE`` and what arrives on it.

The client never retries nor reconnects by itself (that is the caller's policy), commands time out after
the ``timeout`` given at construction, and every failure raises one of :data:`REDIS_ERRORS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from discoverd.backends.redis_state import KEY_TTL, alive_key, channel, encode_message
from discoverd.errors import MissingExtra

try:
    import redis.asyncio as aioredis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.client import PubSub as RedisPubSub
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as exc:
    raise MissingExtra("redis", "redis", "the Redis registry backend (redis://)") from exc

#: Every failure of a Redis round trip (protocol, connection, timeout); nothing else escapes a call.
REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)

#: A field of the protocol: ``(app, addr)``.
Field = tuple[str, str]
#: A write of the protocol: ``(app, addr, weight)``, weight 0 = removal.
NodeWrite = tuple[str, str, int]

#: The reaper's write of one field, atomic in Redis (a script runs alone): a field whose liveness key is
#: back is left alone (-1); else ``HDEL``, and only the ``HDEL`` that removed it (1) publishes ``"<addr> 0"``
#: — so of two reapers racing for one dead field exactly one announces it; 0 = someone removed it first.
#: KEYS: the app hash, the liveness key; ARGV: addr, channel, message.
REAP_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""


class Reaped(NamedTuple):
    """What :meth:`RedisClient.reap` did: the fields it removed and announced, and every field that is
    gone (those, plus the ones another consumer removed first)."""

    announced: list[Field]
    gone: list[Field]


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


class PubSubConnection:
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

    def subscriber(self) -> PubSubConnection:
        """A new pub/sub connection (not connected yet)."""
        return PubSubConnection(self._redis.pubsub())

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

    async def reap(self, fields: Sequence[Field]) -> Reaped:
        """Remove the dead ``fields`` (found without a liveness key) for every consumer: per field,
        :data:`REAP_SCRIPT` checks the key again, ``HDEL``s the field and publishes ``"<addr> 0"`` on
        ``CH_<app>`` if that ``HDEL`` removed it. A field whose key is back is neither removed nor in
        the result. Go consumers (ssgo) reap without announcing; this tells them, and everyone, at once."""
        if not fields:
            return Reaped([], [])
        pipe = self._redis.pipeline(transaction=False)
        for app, addr in fields:
            pipe.eval(REAP_SCRIPT, 2, app, alive_key(app, addr), addr, channel(app), encode_message(addr, 0))
        results = await pipe.execute()
        announced = [f for f, r in zip(fields, results, strict=True) if r == 1]
        gone = [f for f, r in zip(fields, results, strict=True) if r != -1]
        return Reaped(announced, gone)

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


__all__ = [
    "REAP_SCRIPT",
    "REDIS_ERRORS",
    "Field",
    "Message",
    "NodeWrite",
    "Reaped",
    "RedisClient",
    "PubSubConnection",
]
