"""Sending memberlist packets: piggy-backing broadcasts, compounds, compression, CRC and encryption.

:class:`PacketSender` is the UDP output of one node (memberlist ``sendMsg`` / ``rawSendMsgPacket``). Sending
never blocks and never waits for an answer: a packet the transport cannot deliver is lost, as UDP would lose
it. Methods run on the node's event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from discoverd.backends.gossip.host import NodeHost
from discoverd.backends.gossip.transport import Addr
from discoverd.core.gossip.framing import encode_packet, label_overhead, make_compounds
from discoverd.core.gossip.keyring import ENCRYPT_OVERHEAD
from discoverd.core.gossip.members import Member

_COMPOUND_HEADER = 2
_COMPOUND_PART = 2


class PacketSender:
    """Turns messages into UDP packets for one node; it satisfies
    :class:`~discoverd.backends.gossip.host.PacketOut`."""

    def __init__(self, host: NodeHost) -> None:
        self.host = host

    def _encryption_version(self) -> int:
        return 0 if self.host.config.protocol_version < 2 else 1

    def _member_at(self, addr: Addr) -> Member | None:
        for m in self.host.table.nodes.values():
            if m.port == addr[1] and m.host == addr[0]:
                return m
        return None

    def send_msg(self, addr: Addr, msg: bytes, member: Member | None = None) -> None:
        """Send ``msg`` with as many queued broadcasts piggy-backed as fit in one packet."""
        c = self.host.config
        avail = c.udp_buffer_size - len(msg) - _COMPOUND_HEADER - label_overhead(c.label_bytes)
        if self.host.keyring is not None and c.gossip_verify_outgoing:
            avail -= ENCRYPT_OVERHEAD[self._encryption_version()]
        extra = self.host.get_broadcasts(_COMPOUND_PART, avail) if avail > _COMPOUND_PART else []
        self.send_parts(addr, [msg, *extra], member)

    def send_parts(self, addr: Addr, parts: Sequence[bytes], member: Member | None = None) -> None:
        """Send ``parts`` as one message or as compound messages (never more than 255 parts each)."""
        parts = [p for p in parts if p]
        if not parts:
            return
        if len(parts) == 1:
            self.raw(addr, parts[0], member)
            return
        for compound in make_compounds(parts):
            self.raw(addr, compound, member)

    def raw(self, addr: Addr, payload: bytes, member: Member | None = None) -> None:
        """Compress (if smaller), add a CRC for peers speaking protocol 5, encrypt, add the label header,
        send. ``member`` (looked up by address when not given) decides the CRC."""
        c = self.host.config
        member = member or self._member_at(addr)
        keyring = self.host.keyring if c.gossip_verify_outgoing else None
        data = encode_packet(
            payload,
            compress=c.enable_compression,
            crc=member is not None and member.pmax >= 5,
            keyring=keyring,
            encryption_version=self._encryption_version(),
            label=c.label_bytes,
        )
        self.host.transport.send_packet(data, addr)
