"""ADS streams (state of the world): one client's subscriptions, and the hub that pushes changes.

A :class:`AdsStream` is one ``StreamAggregatedResources`` call, independent of gRPC: the server feeds it
the client's requests (:meth:`AdsStream.receive`) and writes what :meth:`AdsStream.outgoing` yields
(serialized ``DiscoveryResponse`` bytes). Per stream:

* **node identity** (``node.id``, ``node.metadata.env``, ``node.locality``) is read from the first
  request only — clients send it once — and kept: it selects the env and the own zone;
* per resource type (Listener, Cluster, ClusterLoadAssignment): the subscribed names, a **version**
  (``"1"``, ``"2"``, … per stream and type: it moves when the content sent changes; a restarted server
  starts again from 1, which clients accept) and the **nonce** of the last response (unique per
  stream). A request whose ``response_nonce`` is the last one sent is an ACK, or a NACK when it has
  ``error_detail`` (logged and counted; nothing is re-sent until something changes); an older nonce
  is neither. Every request carries the full subscription: a changed set is answered at once;
* **absence**: a name is left out of a response while its app has no instance in the stream's env —
  an unknown appid is absent, never a stream error. But a name sent once on the stream is never left
  out again: a Listener or Cluster missing from a later response would make the client delete it
  (and fail its calls), so they keep coming, and an app that lost its last instance gets an *empty*
  assignment. A stream that **resumes** (its first request of a type carries the version the client
  holds from an earlier server — after a restart) keeps its Listener and Cluster names the same way,
  while the assignment of an app not (yet) known here is left out: the client keeps calling the
  endpoints it has until the app is back.

Pushes: the :class:`Hub` is told of registry changes (:meth:`Hub.on_event`), drops the changed apps'
cached resources and marks the streams watching them; each stream's writer then sends one response
per type whose content changed (changes that arrive while a write is under way are coalesced into
the next one). Resources are encoded once per change for all streams (``resources``).

One event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from discoverd.core.events import AppKey, Event, changed_apps
from discoverd.core.registry_state import RegistryState
from discoverd.server.xds import resources
from discoverd.server.xds.protos import ENDPOINTS
from discoverd.server.xds.resources import SERVED, Resources
from discoverd.server.xds.stats import KINDS, XdsClient, XdsStats

log = logging.getLogger("discoverd.xds")

KIND_OF: dict[str, str] = dict(zip(SERVED, KINDS, strict=True))
"""Type URL → short name."""


class _Watch:
    """One resource type on one stream."""

    __slots__ = ("answer", "dirty", "kept", "names", "nonce", "sent", "version")

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()
        self.kept: set[str] = set()
        """Names never to leave out again (sent once, or held by a resuming client)."""
        self.version = 0
        self.nonce = ""
        self.sent: tuple[bytes, ...] | None = None
        self.dirty = False
        self.answer = False
        """The subscription changed: respond even if the content did not."""


class AdsStream:
    """The state of one ADS stream; see the module doc. Created by :meth:`Hub.open`."""

    __slots__ = (
        "_hub",
        "_identified",
        "_nonce",
        "_wake",
        "_watches",
        "closed",
        "env",
        "nacks",
        "node_id",
        "peer",
        "region",
        "since",
        "zone",
    )

    def __init__(self, hub: Hub, peer: str, since: float, env: str) -> None:
        self._hub = hub
        self.peer = peer
        self.since = since
        self.node_id = ""
        self.env = env
        self.zone = ""
        self.region = ""
        self.nacks = 0
        self.closed = False
        self._identified = False
        self._watches: dict[str, _Watch] = {}
        self._wake = asyncio.Event()
        self._nonce = 0

    def __repr__(self) -> str:
        return f"<AdsStream {self.node_id or '?'} {self.peer} env={self.env} zone={self.zone}>"

    def watching(self) -> dict[str, tuple[str, ...]]:
        """Subscribed names by type (short names of ``stats.KINDS``)."""
        return {KIND_OF[url]: tuple(sorted(w.names)) for url, w in self._watches.items()}

    def apps(self) -> set[AppKey]:
        """The ``(appid, env)`` keys this stream watches in any type."""
        return {(name, self.env) for w in self._watches.values() for name in w.names}

    # -- requests ----------------------------------------------------------------------------------

    def receive(self, request: Any) -> None:
        """Take one ``DiscoveryRequest``: identity (first request), ACK/NACK, subscription changes."""
        if not self._identified and request.HasField("node"):
            self._identified = True
            self._identify(request.node)
        url = request.type_url
        if url not in KIND_OF:
            log.debug("xDS client %s asked for unserved type %s", self.node_id, url)
            return
        watch = self._watches.get(url)
        first = watch is None
        if watch is None:
            watch = self._watches[url] = _Watch()
        names = frozenset(request.resource_names)
        if request.response_nonce:
            self._judge(url, watch, request)
        elif first and request.version_info and url != ENDPOINTS:
            watch.kept.update(names)  # resuming: the client holds these from an earlier server
        if first or names != watch.names:
            before = self.apps()
            watch.names = names
            watch.kept &= names
            self._hub.reindex(self, before, self.apps())
            watch.answer = watch.dirty = True
            self._wake.set()

    def _identify(self, node: Any) -> None:
        self.node_id = node.id
        env = node.metadata.fields.get("env")
        if env is not None and env.string_value:
            self.env = env.string_value
        self.zone = node.locality.zone
        self.region = node.locality.region

    def _judge(self, url: str, watch: _Watch, request: Any) -> None:
        if request.response_nonce != watch.nonce:
            return  # answers an older response: neither ACK nor NACK of the current one
        kind = KIND_OF[url]
        if request.HasField("error_detail"):
            self.nacks += 1
            self._hub.nacks[kind] += 1
            log.warning(
                "xDS client %s (%s) rejected %s version %d: %s",
                self.node_id,
                self.peer,
                kind,
                watch.version,
                request.error_detail.message,
            )
        else:
            self._hub.acks[kind] += 1

    # -- responses ---------------------------------------------------------------------------------

    def touch(self, appid: str) -> None:
        """The app ``appid`` changed: re-check every type that watches it."""
        for watch in self._watches.values():
            if appid in watch.names:
                watch.dirty = True
                self._wake.set()

    def close(self) -> None:
        """End :meth:`outgoing` (idempotent)."""
        self.closed = True
        self._wake.set()

    async def outgoing(self) -> AsyncIterator[bytes]:
        """The responses to send, in order, until :meth:`close`. Never ends on its own otherwise."""
        while True:
            await self._wake.wait()
            if self.closed:
                return
            self._wake.clear()
            for url in SERVED:
                watch = self._watches.get(url)
                if watch is not None and watch.dirty:
                    out = self._respond(url, watch)
                    if out is not None:
                        yield out

    def _respond(self, url: str, watch: _Watch) -> bytes | None:
        watch.dirty = False
        fragments = tuple(self._fragments(url, watch))
        if fragments == watch.sent and not watch.answer:
            return None
        if fragments != watch.sent:
            watch.version += 1
        watch.answer = False
        watch.sent = fragments
        self._nonce += 1
        watch.nonce = str(self._nonce)
        self._hub.pushes[KIND_OF[url]] += 1
        return resources.response(url, str(watch.version), watch.nonce, fragments)

    def _fragments(self, url: str, watch: _Watch) -> Iterator[bytes]:
        res = self._hub.resources
        for name in sorted(watch.names):
            if name in watch.kept or res.exists(name, self.env):
                watch.kept.add(name)
                yield res.fragment(url, name, self.env, self.zone)


class Hub:
    """Every open stream, indexed by the apps they watch; told of registry changes.

    ``default_env`` is the env of a client whose node metadata names none; ``clock`` gives
    nanoseconds since the epoch (for :attr:`AdsStream.since`). Counters are per type (``stats.KINDS``).
    """

    def __init__(self, registry: RegistryState, *, default_env: str, clock: Callable[[], int]) -> None:
        self.resources = Resources(registry)
        self._default_env = default_env
        self._clock = clock
        self._streams: set[AdsStream] = set()
        self._index: dict[AppKey, set[AdsStream]] = {}
        self.opened = 0
        self.refused = 0
        self.pushes = dict.fromkeys(KINDS, 0)
        self.acks = dict.fromkeys(KINDS, 0)
        self.nacks = dict.fromkeys(KINDS, 0)

    def __repr__(self) -> str:
        return f"<Hub streams={len(self._streams)} apps={len(self._index)}>"

    def open(self, peer: str) -> AdsStream:
        """A new stream (close it with :meth:`close`)."""
        stream = AdsStream(self, peer, self._clock() / 1e9, self._default_env)
        self._streams.add(stream)
        self.opened += 1
        return stream

    def close(self, stream: AdsStream) -> None:
        """Forget ``stream`` and end its :meth:`AdsStream.outgoing`; idempotent."""
        stream.close()
        self._streams.discard(stream)
        self.reindex(stream, stream.apps(), set())

    def close_all(self) -> None:
        for stream in list(self._streams):
            self.close(stream)

    def reindex(self, stream: AdsStream, before: set[AppKey], after: set[AppKey]) -> None:
        """Move ``stream`` in the app index from the keys ``before`` to the keys ``after``."""
        for key in before - after:
            watchers = self._index.get(key)
            if watchers is not None:
                watchers.discard(stream)
                if not watchers:
                    del self._index[key]
        if stream.closed:
            return
        for key in after - before:
            self._index.setdefault(key, set()).add(stream)

    def on_event(self, event: Event) -> None:
        """A registry change: drop the changed apps' resources, mark the streams watching them."""
        for key in changed_apps(event):
            self.resources.invalidate(key)
            for stream in self._index.get(key, ()):
                stream.touch(key[0])

    def stats(self) -> XdsStats:
        return XdsStats(
            streams=len(self._streams),
            streams_opened=self.opened,
            refused=self.refused,
            pushes=dict(self.pushes),
            acks=dict(self.acks),
            nacks=dict(self.nacks),
            encodings=self.resources.encodings,
        )

    def clients(self) -> list[XdsClient]:
        """One entry per open stream, oldest first."""
        return [
            XdsClient(
                node_id=s.node_id,
                peer=s.peer,
                env=s.env,
                zone=s.zone,
                region=s.region,
                watching=s.watching(),
                since=s.since,
                nacks=s.nacks,
            )
            for s in sorted(self._streams, key=lambda s: s.since)
        ]
