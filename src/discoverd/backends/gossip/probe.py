"""SWIM failure detection for one node: ping, indirect pings with nacks, the TCP fallback ping (spec §1.8).

One probe per ``probe_interval`` tick, round-robin over the members. A probe that gets no ack within
``probe_timeout`` asks ``indirect_checks`` other members to ping the target for us (asking for nacks from
peers speaking protocol ≥ 4) and, for targets speaking protocol ≥ 3, tries a TCP ping in parallel; without
any ack by the end of the (awareness-scaled) probe interval the target is suspected. Lifeguard awareness:
-1 for a successful probe, + the missing nacks (or +1 when nobody was asked for nacks) for a failed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from discoverd.core.gossip.framing import make_compounds
from discoverd.core.gossip.members import Member, ip_bytes
from discoverd.core.gossip.messages import Ack, IndirectPing, NodeState, Ping, Suspect, encode
from discoverd.errors import GossipError

log = logging.getLogger("discoverd.gossip")

if TYPE_CHECKING:
    from discoverd.backends.gossip.node import MemberlistNode
    from discoverd.backends.gossip.transport import Addr


@dataclass(slots=True)
class _Waiter:
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    nacks: int = 0


class Prober:
    """The failure detector of one :class:`~discoverd.backends.gossip.node.MemberlistNode`."""

    def __init__(self, node: MemberlistNode) -> None:
        self.node = node
        self.seq = 0
        self.waiters: dict[int, _Waiter] = {}
        self.probes = 0
        self.tcp_acks = 0

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def on_ack(self, seq: int, payload: bytes) -> None:
        w = self.waiters.get(seq)
        if w is not None:
            w.acked.set()

    def on_nack(self, seq: int) -> None:
        w = self.waiters.get(seq)
        if w is not None:
            w.nacks += 1

    def _ping(self, seq: int, target: str) -> Ping:
        node = self.node
        return Ping(
            seq_no=seq,
            node=target,
            source_addr=ip_bytes(node.addr[0]),
            source_port=node.addr[1],
            source_node=node.name,
        )

    async def ping(self, addr: Addr, name: str, timeout: float) -> bool:
        """Ping ``name`` at ``addr`` once; True when it acked within ``timeout``."""
        seq = self.next_seq()
        w = self.waiters[seq] = _Waiter()
        try:
            self.node.sender.send_msg(addr, encode(self._ping(seq, name)))
            return await _wait(w.acked, timeout)
        finally:
            self.waiters.pop(seq, None)

    async def run(self, stop: asyncio.Event) -> None:
        """The probe loop; returns when ``stop`` is set."""
        node = self.node
        interval = node.config.probe_interval
        await _wait(stop, node.rng.uniform(0, interval))
        while not stop.is_set():
            start = node.now()
            target = node.table.next_probe_target(start)
            if target is not None:
                try:
                    await self.probe(target)
                except Exception:  # never let one probe stop failure detection
                    log.exception("%s: probing %s failed", node.name, target.name)
            await _wait(stop, max(0.0, start + interval - node.now()))

    async def probe(self, m: Member) -> bool:
        """Probe one member; suspects it and returns False when every probe failed."""
        node = self.node
        c = node.config
        self.probes += 1
        interval = node.awareness.scale(c.probe_interval)
        seq = self.next_seq()
        w = self.waiters[seq] = _Waiter()
        sent = node.now()
        addr = (m.host, m.port)
        tcp: asyncio.Task[bool] | None = None
        try:
            ping = encode(self._ping(seq, m.name))
            if m.state == NodeState.ALIVE:
                node.sender.send_msg(addr, ping, m)
            else:  # let a suspect refute at once (Lifeguard buddy system)
                accuse = encode(Suspect(incarnation=m.incarnation, node=m.name, from_=node.name))
                for packet in make_compounds([ping, accuse]):
                    node.sender.raw(addr, packet, m)
            if await _wait(w.acked, c.probe_timeout):
                node.awareness.apply(-1)
                return True
            expected_nacks = self._indirect(m, seq)
            if m.pmax >= 3 and not c.disable_tcp_pings:
                tcp = asyncio.get_running_loop().create_task(self._tcp_ping(m, sent + interval))
            if await _wait(w.acked, max(0.0, sent + interval - node.now())):
                return True
            if tcp is not None and await tcp:
                return True
            node.awareness.apply(max(0, expected_nacks - w.nacks) if expected_nacks else 1)
        finally:
            self.waiters.pop(seq, None)
            if tcp is not None and not tcp.done():
                tcp.cancel()
        if node.table.nodes.get(m.name) is m:
            accuse_msg = Suspect(incarnation=m.incarnation, node=m.name, from_=node.name)
            node._apply(node.table.on_suspect(accuse_msg, node.now()))
        return False

    def _indirect(self, m: Member, seq: int) -> int:
        """Ask up to ``indirect_checks`` alive peers to ping ``m``; returns how many will nack."""
        node = self.node
        helpers = [p for p in node.table.others() if p.name != m.name]
        chosen = node.rng.sample(helpers, min(node.config.indirect_checks, len(helpers)))
        nacks = 0
        for h in chosen:
            want_nack = h.pmax >= 4
            nacks += want_nack
            req = IndirectPing(
                seq_no=seq,
                target=m.addr,
                port=m.port,
                node=m.name,
                nack=want_nack,
                source_addr=ip_bytes(node.addr[0]),
                source_port=node.addr[1],
                source_node=node.name,
            )
            node.sender.send_msg((h.host, h.port), encode(req), h)
        return nacks

    async def _tcp_ping(self, m: Member, deadline: float) -> bool:
        """Ping ``m`` over TCP (memberlist ``sendPingAndWaitForAck``); False on any failure."""
        node = self.node
        timeout = deadline - node.now()
        if timeout <= 0:
            return False
        seq = self.next_seq()
        try:
            async with asyncio.timeout(timeout):
                stream = await node.transport.dial((m.host, m.port), timeout)
                try:
                    await node.exchange.write(stream, encode(self._ping(seq, m.name)), initiator=True)
                    reply = await node.exchange.read(stream, initiator=True)
                finally:
                    stream.close()
        except (GossipError, OSError, TimeoutError, ConnectionError):
            return False
        ok = isinstance(reply, Ack) and reply.seq_no == seq
        self.tcp_acks += ok
        return ok


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """True when ``event`` is set within ``timeout`` seconds."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
            return True
    return False
