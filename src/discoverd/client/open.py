"""``open_registry(url)``: a registry backend by URL.

* ``memory://`` — :class:`~discoverd.backends.memory.MemoryRegistry`, in-process (the embedded default);
* ``discoverd://host:port[,host:port]?env=&zone=&region=&hostname=&token=&tls_ca=`` —
  :class:`~discoverd.client.registry.DiscoverdRegistry`, a discoverd / bilibili-discovery cluster
  (``discoverd+https://`` for nodes serving HTTPS);
* ``redis://[:password@]host:port[/db]?app=&heartbeat=&reap=&timeout=`` —
  :class:`~discoverd.backends.redis.RedisRegistry`, wire-compatible with apigo/ssgo discover (db 15
  by default);
* ``gossip://host:port?join=h:p,…&secret=KEY&preset=local|lan|wan`` —
  :class:`~discoverd.backends.gossip.registry.GossipRegistry`, a memberlist node speaking the go-micro
  gossip registry (no server; see that module for every parameter).

Add ``?cache=SECONDS`` to any URL to wrap the backend in a
:class:`~discoverd.backends.cache.CachedRegistry` with that TTL (it then owns the backend).

Each backend is imported when its scheme is first opened: ``redis://`` needs the ``[redis]`` extra,
``gossip://`` the ``[gossip]`` extra; without it, :func:`open_registry` raises
:class:`~discoverd.errors.MissingExtra` naming the extra to install.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from discoverd.backends.base import Registry
from discoverd.backends.cache import CachedRegistry
from discoverd.backends.memory import MemoryRegistry
from discoverd.errors import ConfigError


def open_registry(url: str = "memory://") -> Registry:
    """The registry backend named by ``url`` (not yet connected: it connects on first use).

    Raises :class:`~discoverd.errors.ConfigError` for an unknown scheme or a malformed URL, and
    :class:`~discoverd.errors.MissingExtra` when the scheme's optional dependency is not installed.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    cache = [v for k, v in query if k == "cache"]
    rest = [(k, v) for k, v in query if k != "cache"]
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    if parts.scheme == "memory":
        if rest:
            raise ConfigError(f"{url!r}: memory:// takes no parameter but cache")
        registry: Registry = MemoryRegistry()
    elif parts.scheme in ("discoverd", "discoverd+https"):
        from discoverd.client.registry import DiscoverdRegistry

        registry = DiscoverdRegistry(bare)
    elif parts.scheme == "redis":
        from discoverd.backends.redis import RedisRegistry  # needs the [redis] extra

        registry = RedisRegistry(bare)
    elif parts.scheme == "gossip":
        from discoverd.backends.gossip.registry import GossipRegistry  # needs the [gossip] extra

        registry = GossipRegistry(bare)
    else:
        raise ConfigError(
            f"{url!r}: unknown registry scheme {parts.scheme!r} "
            "(memory://, discoverd://, discoverd+https://, redis://, gossip://)"
        )
    if cache:
        try:
            ttl = float(cache[0])
        except ValueError:
            raise ConfigError(f"{url!r}: cache must be a number of seconds") from None
        return CachedRegistry(registry, ttl=ttl, own=True)
    return registry
