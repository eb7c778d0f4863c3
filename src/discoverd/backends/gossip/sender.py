"""Sending memberlist packets: piggy-backing broadcasts, compounds, compression, CRC and encryption."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from discoverd.core.gossip.framing import encode_packet, label_overhead, make_compounds
from discoverd.core.gossip.keyring import ENCRYPT_OVERHEAD
from discoverd.core.gossip.members import Member

if TYPE_CHECKING:
    from discoverd.backends.gossip.node import MemberlistNode
    from discoverd.backends.gossip.transport import Addr

_COMPOUND_HEADER = 2
_COMPOUND_PART = 2


class PacketSender:
    """Turns messages into UDP packets for one node (memberlist ``sendMsg`` / ``rawSendMsgPacket``)."""

    def __init__(self, node: MemberlistNode) -> None:
        self.node = node

    def _encryption_version(self) -> int:
        return 0 if self.node.config.protocol_version < 2 else 1

    def _member_at(self, addr: Addr) -> Member | None:
        for m in self.node.table.nodes.values():
            if m.port == addr[1] and m.host == addr[0]:
                return m
        return None

    def send_msg(self, addr: Addr, msg: bytes, member: Member | None = None) -> None:
        """Send ``msg`` with as many queued broadcasts piggy-backed as fit in one packet."""
        c = self.node.config
        avail = c.udp_buffer_size - len(msg) - _COMPOUND_HEADER - label_overhead(c.label_bytes)
        if self.node.keyring is not None and c.gossip_verify_outgoing:
            avail -= ENCRYPT_OVERHEAD[self._encryption_version()]
        extra = self.node.get_broadcasts(_COMPOUND_PART, avail) if avail > _COMPOUND_PART else []
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
        send."""
        node = self.node
        c = node.config
        member = member or self._member_at(addr)
        keyring = node.keyring if c.gossip_verify_outgoing else None
        data = encode_packet(
            payload,
            compress=c.enable_compression,
            crc=member is not None and member.pmax >= 5,
            keyring=keyring,
            encryption_version=self._encryption_version(),
            label=c.label_bytes,
        )
        node.transport.send_packet(data, addr)
