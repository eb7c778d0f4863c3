"""The settings of the Redis backend: timings (:class:`RedisConfig`) and the ``redis://`` URL.

``redis://[user][:password@]host[:port][/db]?app=a,b&heartbeat=1&reap=1&timeout=2`` — db 15 when the path
is empty (the Go libraries' default); ``app`` (repeatable, comma-separated) names apps to follow from the
start; ``heartbeat``, ``reap`` and ``timeout`` override the timings, in seconds. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from discoverd.backends.redis_state import KEY_TTL
from discoverd.core.backoff import Backoff
from discoverd.errors import ConfigError

#: The database of a URL without a path (the Go libraries' default).
DEFAULT_DB: Final = 15
#: URL query parameter -> :class:`RedisConfig` field.
_TIMING_PARAMS: Final = {"heartbeat": "heartbeat", "reap": "reap_interval", "timeout": "timeout"}


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig:
    """Timings of :class:`~discoverd.backends.redis.RedisRegistry`; :class:`ConfigError` when invalid.

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
    """A parsed ``redis://`` URL.

    * ``connection`` — keyword arguments of the client: ``host``, ``port``, ``db``, ``username``,
      ``password`` (``None`` when absent);
    * ``config`` — the timings (defaults overridden by the query);
    * ``apps`` — apps to follow from the start, in URL order, without duplicates.
    """

    connection: dict[str, Any]
    config: RedisConfig
    apps: tuple[str, ...]


def parse_redis_url(url: str) -> RedisURL:
    """Parse ``redis://[user][:password@]host[:port][/db]?app=&heartbeat=&reap=&timeout=``.

    Raises :class:`ConfigError` for another scheme, a missing host, a bad port or db, a timing that is
    not a number (or out of range, see :class:`RedisConfig`) and any unknown query parameter.
    """
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
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "app":
            apps.extend(a for a in value.split(",") if a)
        elif key in _TIMING_PARAMS:
            try:
                timings[_TIMING_PARAMS[key]] = float(value)
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


__all__ = ["DEFAULT_DB", "RedisConfig", "RedisURL", "parse_redis_url"]
