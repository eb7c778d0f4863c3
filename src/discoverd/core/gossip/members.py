"""The memberlist member table: incarnations, the alive/suspect/dead rules, refutation, suspicion timers.

One :class:`MemberTable` per node. It is I/O-free: each method takes the current (monotonic) time and returns
:class:`Effects` — the messages to gossip (named by node, so a newer message about a node replaces the older
one in the broadcast queue) and the membership events to publish. Rules (spec §1.9, memberlist 0.2.2
``state.go``):

* **alive(inc)** — an unknown node is added (at a random position of the probe order) and joins; a known node
  is updated only when ``inc`` is strictly greater, or when it comes back at a new address after having left
  (or been dead longer than ``dead_node_reclaim_time``); another address is otherwise a conflict, ignored.
  An alive about ourselves that is not an exact echo of our own state is refuted.
* **suspect(inc)** — ignored for unknown nodes, older incarnations and nodes not alive; a second accuser is a
  confirmation that shortens the suspicion timer (Lifeguard); about ourselves → refute.
* **dead(inc)** — ``From == Node`` means a voluntary leave (state Left), otherwise Dead; about ourselves →
  refute, unless we are leaving.
* **refute** — our incarnation becomes ``max(own + 1, accused + 1)`` and a fresh alive is gossiped;
  :attr:`Effects.refuted` tells the caller to raise its awareness score.

Node states are :class:`~discoverd.core.gossip.messages.NodeState`: ALIVE → SUSPECT (failed probe or suspect
message) → DEAD (suspicion timeout or dead message) or back to ALIVE (refutation); ALIVE → LEFT (leave).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.messages import Alive, Dead, NodeState, PushNodeState, Suspect, encode, make_vsn
from discoverd.core.gossip.suspicion import Suspicion, suspicion_k, suspicion_timeouts
from discoverd.errors import GossipError

EventKind = Literal["join", "leave", "update"]


@dataclass(slots=True)
class Member:
    """What this node knows about one member (ourselves included)."""

    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: NodeState
    state_change: float
    vsn: bytes

    @property
    def host(self) -> str:
        """The member's IP address as text (an IPv4-mapped 16-byte address is shown as IPv4)."""
        return ip_text(self.addr)

    @property
    def pmax(self) -> int:
        """The highest protocol version the member speaks (0 when unknown)."""
        return self.vsn[1] if len(self.vsn) == 6 else 0

    def push_state(self) -> PushNodeState:
        """This member as an entry of a push/pull exchange."""
        return PushNodeState(
            name=self.name,
            addr=self.addr,
            port=self.port,
            meta=self.meta,
            incarnation=self.incarnation,
            state=int(self.state),
            vsn=self.vsn if len(self.vsn) == 6 else make_vsn(),
        )

    def snapshot(self) -> Member:
        """A copy for handing out (events, ``members()``)."""
        return Member(
            self.name,
            self.addr,
            self.port,
            self.meta,
            self.incarnation,
            self.state,
            self.state_change,
            self.vsn,
        )


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A membership change: a member joined, left (or died), or changed its metadata."""

    kind: EventKind
    member: Member


@dataclass(slots=True)
class Effects:
    """What the caller must do after a table update."""

    #: ``(node name, encoded message)`` to queue for gossip, named by the node the message is about.
    broadcasts: list[tuple[str, bytes]] = field(default_factory=list)
    events: list[MemberEvent] = field(default_factory=list)
    #: We had to refute an accusation (the caller raises its awareness score by one each time).
    refuted: int = 0

    def extend(self, other: Effects) -> None:
        self.broadcasts.extend(other.broadcasts)
        self.events.extend(other.events)
        self.refuted += other.refuted


def ip_text(addr: bytes) -> str:
    """``addr`` (4 or 16 bytes, or text) as an IP string; ``""`` when it is not an address."""
    try:
        if len(addr) == 4:
            return str(ipaddress.IPv4Address(addr))
        if len(addr) == 16:
            ip6 = ipaddress.IPv6Address(addr)
            return str(ip6.ipv4_mapped or ip6)
    except ValueError:
        return ""
    return ""


def ip_bytes(host: str) -> bytes:
    """``host`` (an IP literal) as 4 bytes (IPv4) or 16 bytes (IPv6); ValueError for anything else."""
    return ipaddress.ip_address(host).packed


class MemberTable:
    """The member table of the node called ``config.name`` (see the module docstring).

    Not thread-safe; one owner (the node's event loop) calls it.
    """

    def __init__(self, config: GossipConfig, name: str, rng: random.Random | None = None) -> None:
        self.config = config
        self.name = name
        self.rng = rng or random.Random()
        self.nodes: dict[str, Member] = {}
        self.order: list[Member] = []  # probe order; shuffled at each wrap-around
        self.probe_index = 0
        self.suspicions: dict[str, Suspicion] = {}
        self.leaving = False

    def __repr__(self) -> str:
        return f"<MemberTable {self.name!r}: {self.num_members()} of {len(self.nodes)} alive>"

    @property
    def local(self) -> Member:
        return self.nodes[self.name]

    def vsn(self) -> bytes:
        c = self.config
        return make_vsn(
            c.protocol_version, c.delegate_protocol_min, c.delegate_protocol_max, c.delegate_protocol_version
        )

    # -- reading ------------------------------------------------------------------------------------------

    def num_members(self) -> int:
        """Members not dead or left (memberlist ``NumMembers``), ourselves included."""
        return sum(1 for m in self.nodes.values() if m.state in (NodeState.ALIVE, NodeState.SUSPECT))

    def members(self) -> list[Member]:
        """Copies of the live members (alive or suspect), ourselves included, sorted by name."""
        live = (m for m in self.nodes.values() if m.state in (NodeState.ALIVE, NodeState.SUSPECT))
        return sorted((m.snapshot() for m in live), key=lambda m: m.name)

    def others(self, states: Iterable[NodeState] = (NodeState.ALIVE,)) -> list[Member]:
        wanted = set(states)
        return [m for m in self.nodes.values() if m.name != self.name and m.state in wanted]

    def push_states(self) -> list[PushNodeState]:
        """Every known node, ourselves included, for a push/pull exchange."""
        return [m.push_state() for m in self.nodes.values()]

    def gossip_targets(self, now: float) -> list[Member]:
        """Up to ``gossip_nodes`` random peers: alive, suspect, or dead for less than the gossip-to-the-dead
        time."""
        dead_limit = self.config.gossip_to_the_dead_time

        def ok(m: Member) -> bool:
            if m.name == self.name:
                return False
            if m.state in (NodeState.ALIVE, NodeState.SUSPECT):
                return True
            return m.state == NodeState.DEAD and now - m.state_change <= dead_limit

        pool = [m for m in self.nodes.values() if ok(m)]
        return self.rng.sample(pool, min(self.config.gossip_nodes, len(pool)))

    def next_probe_target(self, now: float) -> Member | None:
        """The next member to probe, round-robin; at each wrap-around dead members past the gossip-to-the-dead
        time are forgotten and the order is shuffled. ``None`` when there is nobody to probe."""
        for _ in range(2 * len(self.order) + 1):
            if self.probe_index >= len(self.order):
                self._reset_order(now)
                if not self.order:
                    return None
            m = self.order[self.probe_index]
            self.probe_index += 1
            if m.name != self.name and m.state in (NodeState.ALIVE, NodeState.SUSPECT):
                return m
        return None

    def _reset_order(self, now: float) -> None:
        limit = self.config.gossip_to_the_dead_time
        for m in [m for m in self.order if m.state == NodeState.DEAD and now - m.state_change > limit]:
            del self.nodes[m.name]
        self.order = list(self.nodes.values())
        self.rng.shuffle(self.order)
        self.probe_index = 0

    def next_deadline(self) -> float | None:
        """When the earliest suspicion timer fires (``None`` without suspicions)."""
        return min((s.deadline for s in self.suspicions.values()), default=None)

    # -- our own state ------------------------------------------------------------------------------------

    def bootstrap(self, addr: bytes, port: int, meta: bytes, now: float) -> Effects:
        """Create our own entry (incarnation 1) and gossip it."""
        alive = Alive(incarnation=1, node=self.name, addr=addr, port=port, meta=meta, vsn=self.vsn())
        return self.on_alive(alive, now, bootstrap=True)

    def update_local(self, meta: bytes, now: float) -> Effects:
        """Announce new metadata for ourselves with the next incarnation."""
        me = self.local
        alive = Alive(
            incarnation=me.incarnation + 1,
            node=self.name,
            addr=me.addr,
            port=me.port,
            meta=meta,
            vsn=self.vsn(),
        )
        return self.on_alive(alive, now, bootstrap=True)

    def leave(self, now: float) -> Effects:
        """Start a graceful leave: a dead message about ourselves (From = us), so peers mark us Left."""
        self.leaving = True
        me = self.local
        return self.on_dead(Dead(incarnation=me.incarnation, node=self.name, from_=self.name), now)

    def _refute(self, accused: int, now: float) -> Effects:
        me = self.local
        me.incarnation = max(me.incarnation + 1, accused + 1)
        alive = Alive(
            incarnation=me.incarnation,
            node=self.name,
            addr=me.addr,
            port=me.port,
            meta=me.meta,
            vsn=self.vsn(),
        )
        return Effects(broadcasts=[(self.name, encode(alive))], refuted=1)

    # -- the three rules ----------------------------------------------------------------------------------

    def on_alive(self, a: Alive, now: float, *, bootstrap: bool = False) -> Effects:
        """Apply an alive message (spec §1.9)."""
        if self.leaving and a.node == self.name:
            return Effects()
        if len(a.vsn) >= 3 and (a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]):
            return Effects()
        if 0 < len(a.vsn) < 6:  # memberlist 0.2.2 would index past the end: never accept or relay these
            return Effects()
        if len(a.addr) not in (4, 16):  # not an IP address: such a member could never be reached
            return Effects()
        m = self.nodes.get(a.node)
        reclaim = False
        if m is None:
            m = Member(a.node, a.addr, a.port, a.meta, 0, NodeState.DEAD, now, a.vsn or make_vsn())
            self.nodes[a.node] = m
            self.order.insert(self.rng.randint(0, len(self.order)), m)
        elif m.addr != a.addr or m.port != a.port:
            reclaimable = self.config.dead_node_reclaim_time > 0 and (
                now - m.state_change > self.config.dead_node_reclaim_time
            )
            if not (m.state == NodeState.LEFT or (m.state == NodeState.DEAD and reclaimable)):
                return Effects()  # conflicting address: another live node claims this name
            reclaim = True
        is_local = a.node == self.name
        if a.incarnation <= m.incarnation and not is_local and not reclaim:
            return Effects()
        if a.incarnation < m.incarnation and is_local:
            return Effects()
        self.suspicions.pop(a.node, None)
        if is_local and not bootstrap:
            if a.incarnation == m.incarnation and a.meta == m.meta and a.vsn == self.vsn():
                return Effects()
            return self._refute(a.incarnation, now)
        old_state, old_meta = m.state, m.meta
        if a.vsn:
            m.vsn = a.vsn
        m.incarnation, m.meta, m.addr, m.port = a.incarnation, a.meta, a.addr, a.port
        if m.state != NodeState.ALIVE:
            m.state, m.state_change = NodeState.ALIVE, now
        out = Effects(broadcasts=[(a.node, encode(a))])
        if old_state in (NodeState.DEAD, NodeState.LEFT):
            out.events.append(MemberEvent("join", m.snapshot()))
        elif old_meta != m.meta:
            out.events.append(MemberEvent("update", m.snapshot()))
        return out

    def on_suspect(self, s: Suspect, now: float) -> Effects:
        """Apply a suspect message (spec §1.8–1.9)."""
        m = self.nodes.get(s.node)
        if m is None or s.incarnation < m.incarnation:
            return Effects()
        timer = self.suspicions.get(s.node)
        if timer is not None:
            if timer.confirm(s.from_):
                return Effects(broadcasts=[(s.node, encode(s))])
            return Effects()
        if m.state != NodeState.ALIVE:
            return Effects()
        if s.node == self.name:
            return self._refute(s.incarnation, now)
        m.incarnation, m.state, m.state_change = s.incarnation, NodeState.SUSPECT, now
        n = len(self.nodes)
        c = self.config
        lo, hi = suspicion_timeouts(c.suspicion_mult, c.suspicion_max_timeout_mult, n, c.probe_interval)
        self.suspicions[s.node] = Suspicion(s.from_, suspicion_k(c.suspicion_mult, n), lo, hi, now)
        return Effects(broadcasts=[(s.node, encode(s))])

    def on_dead(self, d: Dead, now: float) -> Effects:
        """Apply a dead message (spec §1.9)."""
        m = self.nodes.get(d.node)
        if m is None or d.incarnation < m.incarnation:
            return Effects()
        self.suspicions.pop(d.node, None)
        if m.state in (NodeState.DEAD, NodeState.LEFT):
            return Effects()
        if d.node == self.name and not self.leaving:
            return self._refute(d.incarnation, now)
        m.incarnation = d.incarnation
        m.state = NodeState.LEFT if d.node == d.from_ else NodeState.DEAD
        m.state_change = now
        return Effects(broadcasts=[(d.node, encode(d))], events=[MemberEvent("leave", m.snapshot())])

    def expire_suspicions(self, now: float) -> Effects:
        """Declare dead every suspect whose timer ran out."""
        out = Effects()
        for name, timer in list(self.suspicions.items()):
            if timer.deadline <= now:
                del self.suspicions[name]
                m = self.nodes.get(name)
                if m is not None and m.state == NodeState.SUSPECT:
                    out.extend(self.on_dead(Dead(incarnation=m.incarnation, node=name, from_=self.name), now))
        return out

    # -- push/pull ----------------------------------------------------------------------------------------

    def verify_protocol(self, remote: list[PushNodeState]) -> None:
        """Raise :class:`GossipError` unless every alive node's current versions fit everybody's ranges."""
        vsns = [r.vsn for r in remote if r.state == NodeState.ALIVE and len(r.vsn) == 6]
        vsns += [m.vsn for m in self.nodes.values() if m.state == NodeState.ALIVE and len(m.vsn) == 6]
        if not vsns:
            return
        pmin, pmax = max(v[0] for v in vsns), min(v[1] for v in vsns)
        dmin, dmax = max(v[3] for v in vsns), min(v[4] for v in vsns)
        for v in vsns:
            if not pmin <= v[2] <= pmax:
                raise GossipError(f"protocol version {v[2]} is incompatible: [{pmin}, {pmax}]")
            if not dmin <= v[5] <= dmax:
                raise GossipError(f"delegate protocol version {v[5]} is incompatible: [{dmin}, {dmax}]")

    def merge_remote(self, remote: list[PushNodeState], now: float) -> Effects:
        """Apply the node list of a push/pull exchange: alive as alive, left as a leave, dead or suspect as
        a suspicion of our own (a remote "dead" only makes us suspect)."""
        out = Effects()
        for r in remote:
            if r.state == NodeState.ALIVE:
                a = Alive(
                    incarnation=r.incarnation, node=r.name, addr=r.addr, port=r.port, meta=r.meta, vsn=r.vsn
                )
                out.extend(self.on_alive(a, now))
            elif r.state == NodeState.LEFT:
                out.extend(self.on_dead(Dead(incarnation=r.incarnation, node=r.name, from_=r.name), now))
            elif r.state in (NodeState.DEAD, NodeState.SUSPECT):
                out.extend(
                    self.on_suspect(Suspect(incarnation=r.incarnation, node=r.name, from_=self.name), now)
                )
        return out
