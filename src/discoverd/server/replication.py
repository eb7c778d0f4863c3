"""Peer replication of a registry node (spec §6), wire-compatible with the Go server's peers.

Writes from clients are applied locally, answered, and then sent to every own-zone peer with
``replication=true`` and to one node of each other zone with ``replication=false`` — from a
per-peer bounded queue (:class:`~discoverd.core.replication.PeerQueue`) drained by one worker task
per peer, with retries and backoff. So a slow or dead peer never delays a client's answer, and
cannot grow memory beyond the queue bound (the Go server replicates synchronously, unqueued).

The replicator is a subscriber of the node's events (``server/events.py``): it queues the writes
that :func:`~discoverd.core.replication.fan_out` sends on, and follows
:class:`~discoverd.core.events.PeersChanged`. Answers drive repair, as decided by
:func:`discoverd.core.repair.judge`: a replicated renew answered ``-404`` sends the peer our full
copy; ``-409`` adopts the peer's newer copy. A peer is ``UP`` after an answer and ``LOST`` after a
``-500`` or a transport failure (the Go server leaves it UP on transport failures); each change is
published as :class:`~discoverd.core.events.PeerStatusChanged`.

Security: with TLS on, peers are reached over ``https`` with the node's client context (see
``server/tls.py``); with a peer secret, every request carries ``Authorization: Bearer <secret>``. A
peer refusing us (-401/-403: wrong secret, or a peer with tokens and no secret) is not retried: the
operation is counted in ``refused`` and dropped, and the peer is LOST until it accepts one. With a
peer secret, a client's write of ``infra.discovery`` is not forwarded
(:func:`~discoverd.core.cluster.forwardable`): it must not become a peer on the other nodes.

A single node loads no HTTP client: the peers' client (``server/peer_http.py``, aiohttp) is imported
when the first peer is added (a peer set change, not a request's path); its session opens with the
first request.

Failures cost bounded work and log volume: a peer's senders back off on its consecutive failures
(up to 5 s between tries), and failure lines are aggregated per peer (``server/peers.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from discoverd import jsoncodec
from discoverd.core import repair
from discoverd.core.backoff import Backoff
from discoverd.core.cluster import forwardable
from discoverd.core.events import (
    Cancelled,
    Event,
    InstancesSet,
    PeersChanged,
    PeerStatusChanged,
    Registered,
    Renewed,
)
from discoverd.core.replication import (
    CANCEL,
    REGISTER,
    InstanceKey,
    PeerOp,
    PeerQueue,
    fan_out,
    lane,
    peer_op,
    register_op,
)
from discoverd.errors import BadRequest
from discoverd.model import Instance
from discoverd.server.peers import NODE_LOST, NODE_UP, NodeStatus, Peer, PeerLog, PeerUnreachable

if TYPE_CHECKING:
    from discoverd.server.peer_http import PeerHttp

__all__ = ["NODE_LOST", "NODE_UP", "NodeStatus", "Peer", "Replicator"]

log = logging.getLogger("discoverd.replication")

_REPLICABLE = (Registered, Renewed, Cancelled, InstancesSet)
_LEASES = (Registered, Renewed)
OpFactory = Callable[[bool], PeerOp]
"""Builds the operation for a target: the argument is the ``replication`` flag to send."""


class Replicator:
    """The replication targets of one node and their workers; a subscriber of the node's events.

    ``spawn`` starts a worker in the node's task group; ``local_copy`` reads our copy of an instance
    (for a -404 repair); ``adopt`` stores a peer's newer copy (-409); ``publish`` announces peer
    status changes; ``clock`` (monotonic seconds) paces the failure log lines. Not thread-safe (one
    loop).
    """

    kinds: ClassVar[tuple[type[Event], ...]] = (
        Registered,
        Renewed,
        Cancelled,
        InstancesSet,
        PeersChanged,
    )

    def __init__(
        self,
        *,
        zone: str,
        me: str,
        queue_limit: int,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        local_copy: Callable[[InstanceKey], Instance | None],
        adopt: Callable[[Instance], None],
        publish: Callable[[Event], None],
        rng: random.Random | None = None,
        request_timeout: float = 5.0,
        senders: int = 4,
        scheme: str = "http",
        ssl_context: ssl.SSLContext | None = None,
        peer_secret: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.zone = zone
        self.me = me
        self.queue_limit = queue_limit
        self.senders = senders
        """Concurrent requests per peer (one per instance at a time)."""
        self._spawn = spawn
        self._local_copy = local_copy
        self._adopt = adopt
        self._publish = publish
        self._rng = rng or random.Random()
        self._request_timeout = request_timeout
        self._backoff = Backoff(base=0.05, cap=5.0, rng=self._rng.random)
        self.own: dict[str, Peer] = {}
        self.remote: dict[str, Peer] = {}
        self._client: PeerHttp | None = None
        """The peers' HTTP client, made by :meth:`_http` for the first request to a peer."""
        self.scheme = scheme
        """``http`` or ``https`` (TLS on: every peer is reached over HTTPS)."""
        self._ssl = ssl_context
        self._headers = {"User-Agent": "discoverd-peer"}
        self._secret = bool(peer_secret)
        self._log = PeerLog(clock)
        if peer_secret:
            self._headers["Authorization"] = f"Bearer {peer_secret}"

    def __repr__(self) -> str:
        return f"<Replicator own={sorted(self.own)} zones={sorted(self.remote)}>"

    # -- events ----------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Queue a write for the peers it goes to (:func:`fan_out`), or follow a new peer set."""
        if not self.own and not self.remote and type(event) is not PeersChanged:
            return  # a single node stops here (this is on every write's path)
        if isinstance(event, PeersChanged):
            self.set_peers(event.peers.own, event.peers.zone_map())
        elif isinstance(event, _REPLICABLE):
            if self._secret and isinstance(event, _LEASES) and not forwardable(event, secret=True):
                return
            own, cross_zone = fan_out(event, self.zone)
            if own:
                self.replicate(lambda r: peer_op(event, replication=r), cross_zone=cross_zone)

    # -- membership ------------------------------------------------------------------------------

    def set_peers(self, own: Iterable[str], zones: dict[str, list[str]]) -> None:
        """Make the targets exactly ``own`` (minus this node) and one target per zone in ``zones``."""
        wanted = {a for a in own if a != self.me}
        for addr in list(self.own):
            if addr not in wanted:
                self._drop(self.own.pop(addr))
        for addr in sorted(wanted - set(self.own)):
            self.own[addr] = self._start(Peer(self.zone, [addr], True, PeerQueue(self.queue_limit)))
        for zone in list(self.remote):
            if zone not in zones or not zones[zone]:
                self._drop(self.remote.pop(zone))
        for zone, addrs in zones.items():
            if not addrs or zone == self.zone:
                continue
            peer = self.remote.get(zone)
            if peer is None:
                shuffled = list(addrs)
                self._rng.shuffle(shuffled)
                self.remote[zone] = self._start(Peer(zone, shuffled, False, PeerQueue(self.queue_limit)))
            elif set(peer.addrs) != set(addrs):
                peer.addrs = [a for a in peer.addrs if a in addrs] + [a for a in addrs if a not in peer.addrs]

    def _start(self, peer: Peer) -> Peer:
        self._http()  # the first peer loads the peers' client (aiohttp) here, not in a sender
        peer.tasks = [self._spawn(self._worker(peer)) for _ in range(self.senders)]
        return peer

    def _drop(self, peer: Peer) -> None:
        peer.queue.clear()
        for task in peer.tasks:
            task.cancel()
        self._log.forget(peer.name)

    def nodes(self) -> list[NodeStatus]:
        """``/discovery/nodes``: this zone's nodes with their status (self is UP)."""
        out = [NodeStatus(self.me, NODE_UP, self.zone)]
        out += [NodeStatus(a, p.status, self.zone) for a, p in sorted(self.own.items())]
        return out

    def peers(self) -> dict[str, Peer]:
        """Every target by name: own-zone peers by address, other zones as ``zone:NAME``."""
        return {**self.own, **{f"zone:{z}": p for z, p in self.remote.items()}}

    def _set_status(self, peer: Peer, status: int) -> None:
        if peer.status == status:
            return
        peer.status = status
        self._publish(PeerStatusChanged(peer.name, peer.addr, peer.zone, status == NODE_UP))

    def stats(self) -> dict[str, dict[str, int]]:
        peers = self.peers()
        return {
            name: {
                "pending": len(p.queue),
                "dropped": p.queue.dropped,
                "sent": p.sent,
                "failed": p.failed,
                "refused": p.refused,
            }
            for name, p in peers.items()
        }

    # -- fan-out ---------------------------------------------------------------------------------

    def replicate(self, make: OpFactory, *, cross_zone: bool) -> None:
        """Queue a client write for every own-zone peer and, if ``cross_zone``, every other zone.

        The form is built once per ``replication`` flag and shared by the peers' operations (never
        mutated in place), so a write costs one small record per peer."""
        if not self.own and not (cross_zone and self.remote):
            return  # a single node: nothing to queue (this is on every write's path)
        now = asyncio.get_running_loop().time()
        if self.own:
            _push_all(self.own.values(), make(True), now)
        if cross_zone and self.remote:
            _push_all(self.remote.values(), make(False), now)

    def lag(self) -> dict[str, float]:
        """Per peer, seconds the oldest unsent change has been waiting (0 when its queue is empty)."""
        now = asyncio.get_running_loop().time()
        peers = self.peers()
        return {
            name: max(0.0, now - t) if (t := p.queue.oldest()) is not None else 0.0
            for name, p in peers.items()
        }

    # -- workers ---------------------------------------------------------------------------------

    def _http(self) -> PeerHttp:
        client = self._client
        if client is None:  # the first request to a peer: aiohttp is loaded now, once
            from discoverd.server.peer_http import PeerHttp

            client = self._client = PeerHttp(
                headers=self._headers, ssl_context=self._ssl, timeout=self._request_timeout
            )
        return client

    async def _worker(self, peer: Peer) -> None:
        """One of the peer's senders: operations on one instance never overlap (see ``lane``)."""
        while True:
            op = peer.queue.pop(peer.busy)
            if op is None:
                peer.wake.clear()
                await peer.wake.wait()
                continue
            busy = lane(op)
            peer.busy.add(busy)
            try:
                sent = await self._send(peer, op)
            finally:
                peer.busy.discard(busy)
                peer.wake.set()  # an operation that waited for this lane may go now
            if sent:
                continue
            op.attempts += 1
            peer.failed += 1
            if op.attempts >= 10:
                peer.queue.dropped += 1
                self._log.dropped(peer.name, op.action, op.attempts)
            else:
                peer.queue.push_front(op)
            await asyncio.sleep(self._backoff.delay(peer.streak))

    async def _send(self, peer: Peer, op: PeerOp) -> bool:
        """Post ``op``; returns False on a transport failure (to be retried)."""
        url = f"{self.scheme}://{peer.addr}/discovery/{op.action}"
        try:
            body = await self._http().post(url, op.params)
            doc = jsoncodec.loads(body) if body else {}
        except (PeerUnreachable, TimeoutError, OSError, jsoncodec.DecodeError) as exc:
            self._log.failed(peer.name, peer.addr, exc)
            peer.streak += 1
            self._set_status(peer, NODE_LOST)
            peer.rotate()
            return False
        peer.streak = 0
        verdict = repair.judge(op.action, doc)
        if verdict.refused:
            self._refused(peer, op, doc)
            return True  # not retried: the same credentials would be refused again
        peer.sent += 1
        self._set_status(peer, NODE_UP if verdict.up else NODE_LOST)
        if verdict.push_copy and op.key is not None:
            mine = self._local_copy(op.key)
            if mine is not None:
                peer.queue.push(register_op(mine, replication=op.replication))
        elif verdict.adopt is not None:
            self._adopt(verdict.adopt)
        elif verdict.problem:
            self._log.malformed(peer.name, verdict.problem)
        elif op.action in (REGISTER, CANCEL) and repair.answer_code(doc) not in (0, None):
            log.debug("replication %s to %s answered %s", op.action, peer.addr, repair.answer_code(doc))
        return True

    def _refused(self, peer: Peer, op: PeerOp, doc: object) -> None:
        peer.refused += 1
        self._set_status(peer, NODE_LOST)
        message = doc.get("message") if isinstance(doc, dict) else None
        self._log.refused(peer.name, repair.answer_code(doc), message)
        log.debug("replication %s to %s refused", op.action, peer.addr)

    # -- start-up sync -----------------------------------------------------------------------------

    def sync_targets(self) -> list[str]:
        """Own-zone peers and one random node per other zone (spec §6.5)."""
        targets = list(self.own)
        targets += [self._rng.choice(p.addrs) for p in self.remote.values() if p.addrs]
        return targets

    async def fetch_all(self, addr: str) -> list[Instance] | None:
        """A peer's ``fetch/all``, or ``None`` when it fails or refuses (-500 while in protect)."""
        try:
            url = f"{self.scheme}://{addr}/discovery/fetch/all"
            doc = jsoncodec.loads(await self._http().get(url))
        except (PeerUnreachable, TimeoutError, OSError, jsoncodec.DecodeError) as exc:
            log.info("sync from %s failed: %s", addr, exc)
            return None
        if isinstance(doc, dict) and doc.get("code") in (-401, -403):
            log.warning("sync from %s refused: %s (check peer_secret)", addr, doc.get("message"))
            return None
        if not isinstance(doc, dict) or doc.get("code") != 0 or not isinstance(doc.get("data"), dict):
            return None
        out: list[Instance] = []
        try:
            for items in doc["data"].values():
                out.extend(Instance.from_wire(i) for i in items)
        except (BadRequest, TypeError) as exc:
            log.warning("sync from %s: malformed answer: %s", addr, exc)
            return None
        return out

    async def drain(self, within: float) -> None:
        """Wait (at most ``within`` seconds) until every queue is empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while any(len(p.queue) for p in (*self.own.values(), *self.remote.values())):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        for peer in (*self.own.values(), *self.remote.values()):
            for task in peer.tasks:
                task.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _push_all(peers: Iterable[Peer], op: PeerOp, now: float) -> None:
    """Queue a copy of ``op`` (sharing its form) for each of ``peers`` and wake their senders."""
    for peer in peers:
        peer.queue.push(PeerOp(op.action, op.params, op.key, op.replication, queued_at=now))
        peer.wake.set()
