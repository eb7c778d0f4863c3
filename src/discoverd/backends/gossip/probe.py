"""SWIM failure detection for one node: ping, indirect pings with nacks, the TCP fallback ping (spec §1.8).

One probe per ``probe_interval`` tick, round-robin over the members. A probe that gets no ack within
``probe_timeout`` asks ``indirect_checks`` other members to ping the target for us (asking for nacks from
peers speaking protocol ≥ 4) and, for targets speaking protocol ≥ 3, tries a TCP ping in parallel; without
any ack by the end of the (awareness-scaled) probe interval the target is suspected. Lifeguard awareness:
-1 for a successful probe, + the missing nacks (or +1 when nobody was asked for nacks) for a failed one.

The other side of the protocol lives here too: answering pings addressed to us and relaying indirect probes
for peers. The prober knows its node only through the interfaces of :mod:`~discoverd.backends.gossip.host`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from discoverd.backends.gossip.host import NodeHost, PacketOut, StreamPinger
from discoverd.backends.gossip.transport import Addr
from discoverd.core.gossip.framing import make_compounds
from discoverd.core.gossip.members import Member, ip_bytes, ip_text
from discoverd.core.gossip.messages import Ack, IndirectPing, Nack, NodeState, Ping, Suspect, encode
from discoverd.core.gossip.suspicion import Awareness

log = logging.getLogger("discoverd.gossip")

#: Indirect probes relayed at once for other nodes; more are dropped (a flood must not pile up tasks).
MAX_INDIRECT = 256


@dataclass(slots=True)
class _Waiter:
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    nacks: int = 0


class Prober:
    """The failure detector of one node.

    ``packets`` sends the pings, ``streams`` does the TCP fallback ping, ``awareness`` is the node's Lifeguard
    score (the prober raises and lowers it). All methods run on the node's event loop. Counters (read-only
    for others): ``probes`` (probes started), ``tcp_acks`` (probes saved by the TCP ping), ``dropped``
    (indirect probe requests refused because :data:`MAX_INDIRECT` were running).
    """

    def __init__(
        self, host: NodeHost, packets: PacketOut, streams: StreamPinger, awareness: Awareness
    ) -> None:
        self.host = host
        self.packets = packets
        self.streams = streams
        self.awareness = awareness
        self.seq = 0
        self.waiters: dict[int, _Waiter] = {}
        self.probes = 0
        self.tcp_acks = 0
        self.dropped = 0
        self.relaying = 0

    def next_seq(self) -> int:
        """The next sequence number (32 bits, wrapping)."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    # -- incoming -------------------------------------------------------------------------------------------

    def on_ping(self, msg: Ping, src: Addr) -> None:
        """Ack a ping addressed to us (to its stated source address, else to ``src``); one meant for a
        previous process on our address is ignored."""
        if msg.node and msg.node != self.host.name:
            return
        to = (ip_text(msg.source_addr), msg.source_port) if msg.source_addr and msg.source_port else src
        self.packets.send_msg(to, encode(Ack(seq_no=msg.seq_no)))

    def on_ack(self, seq: int, payload: bytes) -> None:
        """An ack arrived: completes the ping or probe waiting for ``seq`` (a late one is ignored)."""
        w = self.waiters.get(seq)
        if w is not None:
            w.acked.set()

    def on_nack(self, seq: int) -> None:
        """A helper asked for an indirect probe reported that the target did not answer it."""
        w = self.waiters.get(seq)
        if w is not None:
            w.nacks += 1

    def relay(self, req: IndirectPing, src: Addr, tasks: asyncio.TaskGroup | None) -> bool:
        """Start probing ``req``'s target for a peer as a task in ``tasks`` and return at once; the task acks
        back when the target answers and nacks on timeout if asked to. False (the request is dropped and
        counted) when :data:`MAX_INDIRECT` relays are already running or ``tasks`` is None (the node's
        loops are not running)."""
        if tasks is None or self.relaying >= MAX_INDIRECT:
            self.dropped += 1
            return False
        self.relaying += 1
        tasks.create_task(self._relay(req, src))
        return True

    async def _relay(self, req: IndirectPing, src: Addr) -> None:
        try:
            to = (ip_text(req.source_addr), req.source_port) if req.source_addr and req.source_port else src
            target = (ip_text(req.target), req.port)
            if not target[0]:
                return
            if await self.ping(target, req.node, self.host.config.probe_timeout):
                self.packets.send_msg(to, encode(Ack(seq_no=req.seq_no)))
            elif req.nack:
                self.packets.send_msg(to, encode(Nack(seq_no=req.seq_no)))
        except Exception:
            log.exception("%s: relaying an indirect probe failed", self.host.name)
        finally:
            self.relaying -= 1

    # -- probing --------------------------------------------------------------------------------------------

    def _ping(self, seq: int, target: str) -> Ping:
        host = self.host
        return Ping(
            seq_no=seq,
            node=target,
            source_addr=ip_bytes(host.addr[0]),
            source_port=host.addr[1],
            source_node=host.name,
        )

    async def ping(self, addr: Addr, name: str, timeout: float) -> bool:
        """Ping ``name`` at ``addr`` once; True when it acked within ``timeout``."""
        seq = self.next_seq()
        w = self.waiters[seq] = _Waiter()
        try:
            self.packets.send_msg(addr, encode(self._ping(seq, name)))
            return await _wait(w.acked, timeout)
        finally:
            self.waiters.pop(seq, None)

    async def run(self, stop: asyncio.Event) -> None:
        """The probe loop; returns when ``stop`` is set. A failing probe is logged, never raised."""
        host = self.host
        interval = host.config.probe_interval
        await _wait(stop, host.rng.uniform(0, interval))
        while not stop.is_set():
            start = host.now()
            target = host.table.next_probe_target(start)
            if target is not None:
                try:
                    await self.probe(target)
                except Exception:  # never let one probe stop failure detection
                    log.exception("%s: probing %s failed", host.name, target.name)
            await _wait(stop, max(0.0, start + interval - host.now()))

    async def probe(self, m: Member) -> bool:
        """Probe one member; suspects it and returns False when every probe failed. Takes up to one
        (awareness-scaled) probe interval."""
        self.probes += 1
        if await self._probe_once(m):
            return True
        host = self.host
        if host.table.nodes.get(m.name) is m:
            accuse_msg = Suspect(incarnation=m.incarnation, node=m.name, from_=host.name)
            host.apply(host.table.on_suspect(accuse_msg, host.now()))
        return False

    async def _probe_once(self, m: Member) -> bool:
        """Direct ping, then indirect pings and the TCP ping; adjusts awareness. True when any got an ack."""
        host = self.host
        c = host.config
        interval = self.awareness.scale(c.probe_interval)
        seq = self.next_seq()
        w = self.waiters[seq] = _Waiter()
        sent = host.now()
        tcp: asyncio.Task[bool] | None = None
        try:
            self._send_probe(m, seq)
            if await _wait(w.acked, c.probe_timeout):
                self.awareness.apply(-1)
                return True
            expected_nacks = self._indirect(m, seq)
            if m.pmax >= 3 and not c.disable_tcp_pings:
                tcp = asyncio.get_running_loop().create_task(self._tcp_ping(m, sent + interval))
            if await _wait(w.acked, max(0.0, sent + interval - host.now())):
                return True
            if tcp is not None and await tcp:
                return True
            self.awareness.apply(max(0, expected_nacks - w.nacks) if expected_nacks else 1)
            return False
        finally:
            self.waiters.pop(seq, None)
            if tcp is not None and not tcp.done():
                tcp.cancel()

    def _send_probe(self, m: Member, seq: int) -> None:
        """The direct ping; a suspect also gets the accusation, so it can refute at once (Lifeguard buddy
        system)."""
        addr = (m.host, m.port)
        ping = encode(self._ping(seq, m.name))
        if m.state == NodeState.ALIVE:
            self.packets.send_msg(addr, ping, m)
            return
        accuse = encode(Suspect(incarnation=m.incarnation, node=m.name, from_=self.host.name))
        for packet in make_compounds([ping, accuse]):
            self.packets.raw(addr, packet, m)

    def _indirect(self, m: Member, seq: int) -> int:
        """Ask up to ``indirect_checks`` alive peers to ping ``m``; returns how many will nack."""
        host = self.host
        helpers = [p for p in host.table.others() if p.name != m.name]
        chosen = host.rng.sample(helpers, min(host.config.indirect_checks, len(helpers)))
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
                source_addr=ip_bytes(host.addr[0]),
                source_port=host.addr[1],
                source_node=host.name,
            )
            self.packets.send_msg((h.host, h.port), encode(req), h)
        return nacks

    async def _tcp_ping(self, m: Member, deadline: float) -> bool:
        """Ping ``m`` over TCP until ``deadline`` (loop time); False on any failure."""
        timeout = deadline - self.host.now()
        if timeout <= 0:
            return False
        ok = await self.streams.ping((m.host, m.port), self._ping(self.next_seq(), m.name), timeout)
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
