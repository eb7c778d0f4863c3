"""memberlist framing: compound messages, CRC, compression, encryption, labels, UDP packets and TCP streams
(spec §1.3–1.6, §1.12, §1.14).

UDP, outgoing (:func:`encode_packet`): payload → ``[9][compress]`` only if smaller → ``[12][crc32][…]``
→ AES-GCM blob (AAD = the label, empty without one) → ``[244][len][label]`` header if a label is set.
Incoming (:func:`decode_packet`) checks and strips the label header, undoes the rest and expands compressed
and compound messages into the leaf messages.

TCP (:func:`encode_stream`, :func:`parse_stream`): one message per direction, optionally compressed
(always, when compression is on) and then encrypted as ``[10][u32 length][blob]`` with the 5 header bytes
(followed by the label, if any) as AAD. With a label the *dialling* side starts the stream with the
``[244][len][label]`` header; the answer carries none (memberlist's ``labelWrappedTransport`` adds the header
when dialling, ``handleConn`` strips it and uses the label as AAD in both directions). Plain streams carry no
length prefix; :func:`parse_stream` parses them incrementally and answers ``None`` until the whole message
is in the buffer.

Labels exist in memberlist ≥ 0.3.0 only; the empty label (the default) means no header and an empty AAD,
i.e. exactly the 0.2.x bytes. Inbound rules (memberlist ``ingestPacket`` / ``handleConn``): the label header
must be present and equal to ours (none when ours is empty); with ``skip_inbound_label_check`` a header is
refused instead and our own label is used as the AAD. Label failures raise :class:`GossipLabelError`.

Never produced here (they crash memberlist 0.2.2): empty compound parts, empty packets, more than 255
parts in one compound.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, cast

from discoverd.core.gossip import lzw
from discoverd.core.gossip.keyring import Keyring, encrypted_length
from discoverd.core.gossip.messages import (
    DECODE_ERRORS,
    OUT_OF_DATA,
    Ack,
    Compress,
    ErrResp,
    MsgType,
    Ping,
    PushNodeState,
    PushPullHeader,
    UserMsgHeader,
    decode,
    encode,
    encode_struct,
    new_unpacker,
    struct_from_map,
)
from discoverd.errors import GossipDecodeError, GossipLabelError

MAX_COMPOUND_PARTS: Final = 255
MAX_PART_SIZE: Final = 0xFFFF
#: Compress/compound wrappers expanded inside one packet, at most.
MAX_NESTING: Final = 4
#: Bytes all decompressions of one UDP packet may produce together (legitimate packets inflate to < 64 KiB).
MAX_PACKET_INFLATED: Final = 1 << 20
MAX_PUSH_STATE_BYTES: Final = 20 << 20
MAX_PUSH_STATE_NODES: Final = 1_048_576
LZW_ALGO: Final = 0
#: memberlist ``LabelMaxSize``: a label's length travels in one byte.
LABEL_MAX_SIZE: Final = 255
#: Leaf message types a UDP packet may carry.
PACKET_TYPES: Final = frozenset(
    int(t)
    for t in (
        MsgType.PING,
        MsgType.INDIRECT_PING,
        MsgType.ACK,
        MsgType.SUSPECT,
        MsgType.ALIVE,
        MsgType.DEAD,
        MsgType.USER,
        MsgType.NACK,
    )
)


# -- compound, CRC, compression ----------------------------------------------------------------------------


def make_compounds(parts: Sequence[bytes]) -> list[bytes]:
    """Pack ``parts`` into compound messages ``[7][n][n × u16 BE length][parts…]`` of at most 255 parts
    each; a group of one part is returned as the part itself. ValueError for an empty part or one of
    65 536 bytes or more."""
    for p in parts:
        if not p:
            raise ValueError("empty compound part (it would crash memberlist 0.2.2)")
        if len(p) > MAX_PART_SIZE:
            raise ValueError(f"compound part of {len(p)} bytes does not fit a u16 length")
    out: list[bytes] = []
    for i in range(0, len(parts), MAX_COMPOUND_PARTS):
        chunk = parts[i : i + MAX_COMPOUND_PARTS]
        if len(chunk) == 1:
            out.append(bytes(chunk[0]))
            continue
        header = bytes((MsgType.COMPOUND, len(chunk))) + struct.pack(f">{len(chunk)}H", *map(len, chunk))
        out.append(header + b"".join(chunk))
    return out


def split_compound(msg: bytes) -> tuple[list[bytes], int]:
    """The parts of a compound message (which starts with its type byte 7) and how many parts were
    truncated (their declared lengths ran past the end). Bytes after the last part are ignored.
    GossipDecodeError if ``msg`` is not a compound or its header is truncated."""
    if len(msg) < 2 or msg[0] != MsgType.COMPOUND:
        raise GossipDecodeError("not a compound message")
    n = msg[1]
    pos = 2 + 2 * n
    if len(msg) < pos:
        raise GossipDecodeError("truncated compound header")
    parts: list[bytes] = []
    for i, size in enumerate(struct.unpack_from(f">{n}H", msg, 2)):
        if len(msg) - pos < size:
            return parts, n - i
        parts.append(bytes(msg[pos : pos + size]))
        pos += size
    return parts, 0


def add_crc(buf: bytes) -> bytes:
    """``[12][CRC32-IEEE of buf, big-endian][buf]``."""
    return bytes((MsgType.HAS_CRC,)) + struct.pack(">I", zlib.crc32(buf)) + buf


def compress_message(buf: bytes) -> bytes:
    """``[9][msgpack compress{Algo: 0, Buf: lzw(buf)}]``."""
    return encode(Compress(algo=LZW_ALGO, buf=lzw.compress(buf)))


def _inflate(msg: bytes, max_size: int) -> bytes:
    """The decompressed content of a ``[9][compress]`` message."""
    c = decode(msg)
    if not isinstance(c, Compress):
        raise GossipDecodeError("not a compress message")
    return _inflate_struct(c, max_size)


def _inflate_struct(c: Compress, max_size: int) -> bytes:
    if c.algo != LZW_ALGO:
        raise GossipDecodeError(f"unknown compression algorithm {c.algo}")
    return lzw.decompress(c.buf, max_size=max_size)


# -- labels (memberlist >= 0.3.0) --------------------------------------------------------------------------


def label_header(label: bytes) -> bytes:
    """``[244][len][label]``, or nothing for the empty label. ValueError above 255 bytes."""
    if not label:
        return b""
    if len(label) > LABEL_MAX_SIZE:
        raise ValueError(f"label of {len(label)} bytes exceeds {LABEL_MAX_SIZE}")
    return bytes((MsgType.HAS_LABEL, len(label))) + label


def label_overhead(label: bytes) -> int:
    """Bytes the label header adds to a packet (memberlist ``labelOverhead``)."""
    return 2 + len(label) if label else 0


def split_label(buf: bytes) -> tuple[bytes, int] | None:
    """The label at the start of ``buf`` and the length of its header: ``(b"", 0)`` when ``buf`` does not
    start with a label header, ``None`` when the header is cut short. GossipLabelError for a header that
    declares an empty label (memberlist: "label header cannot be empty when present")."""
    if not buf or buf[0] != MsgType.HAS_LABEL:
        return b"", 0
    if len(buf) < 2:
        return None
    size = buf[1]
    if size == 0:
        raise GossipLabelError("label header cannot be empty when present")
    if len(buf) < 2 + size:
        return None
    return bytes(buf[2 : 2 + size]), 2 + size


def check_label(found: bytes, label: bytes, *, skip_inbound_label_check: bool = False) -> bytes:
    """The label to authenticate (AAD) an inbound message with, given the ``found`` header label (``b""``
    without a header) and our ``label``. GossipLabelError when memberlist would drop it: a header although
    ``skip_inbound_label_check`` is set, or (without the skip) a label different from ours."""
    if skip_inbound_label_check:
        if found:
            raise GossipLabelError("unexpected double label header")
        return label
    if found != label:
        raise GossipLabelError(f"unacceptable label {found!r} (expected {label!r})")
    return label


# -- UDP packets -------------------------------------------------------------------------------------------


def encode_packet(
    payload: bytes,
    *,
    compress: bool,
    crc: bool,
    keyring: Keyring | None,
    encryption_version: int = 1,
    label: bytes = b"",
) -> bytes:
    """A UDP packet for ``payload`` (one message or a compound): compressed if that makes it smaller,
    CRC-wrapped if ``crc``, then encrypted under the keyring's primary key (AAD = ``label``), then prefixed
    with the label header if ``label`` is not empty. ValueError for an empty payload or a label above 255
    bytes."""
    if not payload:
        raise ValueError("empty packet payload (it would crash memberlist 0.2.2)")
    header = label_header(label)
    if compress:
        packed = compress_message(payload)
        if len(packed) < len(payload):
            payload = packed
    if crc:
        payload = add_crc(payload)
    if keyring is not None:
        payload = keyring.encrypt(payload, aad=label, version=encryption_version)
    return header + payload


class _Expander:
    """Collects the leaves of a packet; ``budget`` bounds the bytes all decompressions may produce."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.budget = MAX_PACKET_INFLATED

    def expand(self, msg: bytes, depth: int) -> None:
        """Add the leaves of ``msg`` (non-empty). Raises GossipDecodeError if ``msg`` itself is bad; a bad
        or truncated compound part is dropped and its siblings kept, as memberlist does."""
        kind = msg[0]
        if kind in PACKET_TYPES:
            self.leaves.append(msg)
            return
        if kind not in (MsgType.COMPOUND, MsgType.COMPRESS):
            raise GossipDecodeError(f"message type {kind} is not allowed in a packet")
        if depth >= MAX_NESTING:
            raise GossipDecodeError("compound/compress messages nested too deeply")
        if kind == MsgType.COMPRESS:
            inner = _inflate(msg, self.budget)
            self.budget -= len(inner)
            if inner:
                self.expand(inner, depth + 1)
            return
        for part in split_compound(msg)[0]:
            if part:
                try:
                    self.expand(part, depth + 1)
                except GossipDecodeError:
                    continue


def decode_packet(
    data: bytes,
    *,
    keyring: Keyring | None,
    verify_incoming: bool = True,
    label: bytes = b"",
    skip_inbound_label_check: bool = False,
) -> list[bytes]:
    """The leaf messages of a UDP packet, each starting with its type byte (0–5, 8 or 11).

    Steps: strip the label header and check it against ``label`` (:func:`check_label`), decrypt with
    ``keyring`` and the label as AAD (if it fails and ``verify_incoming`` is False the packet is taken as
    plaintext), verify and strip an outer CRC, then expand compress and compound messages (nested at most
    :data:`MAX_NESTING` deep, :data:`MAX_PACKET_INFLATED` bytes inflated in all). Empty parts and empty
    inflated data are dropped; so are bad or truncated compound parts (their siblings are kept).
    GossipDecodeError for an empty, undecryptable, bad-CRC or otherwise malformed packet; its subclass
    GossipLabelError for a malformed, missing or different label.
    """
    buf = bytes(data)
    if not buf:
        raise GossipDecodeError("empty packet")
    split = split_label(buf)
    if split is None:
        raise GossipLabelError("cannot decode label; packet has been truncated")
    found, skip = split
    aad = check_label(found, label, skip_inbound_label_check=skip_inbound_label_check)
    buf = buf[skip:]
    if keyring is not None:
        try:
            buf = keyring.decrypt(buf, aad=aad)
        except GossipDecodeError:
            if verify_incoming:
                raise
    if len(buf) >= 5 and buf[0] == MsgType.HAS_CRC:
        if struct.unpack_from(">I", buf, 1)[0] != zlib.crc32(memoryview(buf)[5:]):
            raise GossipDecodeError("CRC mismatch")
        buf = buf[5:]
    if not buf:
        raise GossipDecodeError("empty packet payload")
    ex = _Expander()
    ex.expand(buf, 0)
    return ex.leaves


# -- TCP streams -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushPull:
    """A push/pull exchange: the header, the node states and the delegate's raw user state."""

    header: PushPullHeader
    states: list[PushNodeState]
    user_state: bytes


@dataclass(frozen=True)
class UserStream:
    """A user message sent over TCP (``SendReliable``)."""

    payload: bytes


StreamMessage: TypeAlias = PushPull | Ping | Ack | ErrResp | UserStream


def encode_stream(
    msg: bytes,
    *,
    compress: bool,
    keyring: Keyring | None,
    encryption_version: int = 1,
    label: bytes = b"",
    with_label_header: bool = True,
) -> bytes:
    """The bytes to write for one stream message: compressed unconditionally if ``compress``, then (with a
    keyring) ``[10][u32 BE blob length][blob]`` where the blob's AAD is those first 5 bytes followed by
    ``label``. With a non-empty ``label`` and ``with_label_header`` (the dialling side's message, which opens
    the stream) the ``[244][len][label]`` header goes first; the answer on the same stream passes
    ``with_label_header=False``: memberlist's responder writes no header but still binds the label into the
    AAD. ValueError for a label above 255 bytes."""
    if len(label) > LABEL_MAX_SIZE:
        raise ValueError(f"label of {len(label)} bytes exceeds {LABEL_MAX_SIZE}")
    prefix = label_header(label) if with_label_header else b""
    if compress:
        msg = compress_message(msg)
    if keyring is None:
        return prefix + msg
    header = bytes((MsgType.ENCRYPT,)) + struct.pack(">I", encrypted_length(encryption_version, len(msg)))
    return prefix + header + keyring.encrypt(msg, aad=header + label, version=encryption_version)


def encode_push_pull(states: Sequence[PushNodeState], user_state: bytes, join: bool) -> bytes:
    """``[6][pushPullHeader][states…][user_state]`` (unframed: pass it to :func:`encode_stream`)."""
    header = PushPullHeader(nodes=len(states), user_state_len=len(user_state), join=join)
    return b"".join(
        (bytes((MsgType.PUSH_PULL,)), encode_struct(header), *map(encode_struct, states), user_state)
    )


def encode_user_stream(payload: bytes) -> bytes:
    """``[8][userMsgHeader][payload]`` (unframed)."""
    return bytes((MsgType.USER,)) + encode_struct(UserMsgHeader(user_msg_len=len(payload))) + payload


def parse_stream(
    buf: bytes,
    *,
    keyring: Keyring | None,
    verify_incoming: bool = True,
    max_bytes: int = MAX_PUSH_STATE_BYTES,
    label: bytes = b"",
    with_label_header: bool = True,
    skip_inbound_label_check: bool = False,
) -> tuple[StreamMessage, int] | None:
    """Parse one stream message from the start of ``buf``: ``None`` if more bytes are needed, else the
    message and the number of bytes it took (label header included).

    With ``with_label_header`` (the message that opens a stream, read by the side that accepted it) a label
    header is stripped and checked first (:func:`check_label`; an empty ``label`` accepts no header at all);
    without it (the answer, read by the dialling side) no header is expected. Either way ``label`` is part
    of the AAD of an encrypted message. Handles ``[10]`` encrypted (needs a keyring), ``[9]`` compressed and
    plain messages of types 6, 0, 2, 13 and 8. GossipDecodeError for anything malformed, a message (or
    declared size) above ``max_bytes``, more than 1 048 576 node states, an encrypted stream without a
    keyring, and a plaintext stream when a keyring is configured and ``verify_incoming`` is on;
    GossipLabelError (a subclass) for a malformed, missing or different label.
    """
    if not buf:
        return None
    skip = 0
    if with_label_header:
        split = split_label(buf)
        if split is None:
            return None
        found, skip = split
        label = check_label(found, label, skip_inbound_label_check=skip_inbound_label_check)
        if skip:
            buf = buf[skip:]
    got = _parse_body(buf, keyring, verify_incoming, max_bytes, label)
    return None if got is None else (got[0], skip + got[1])


def _parse_body(
    buf: bytes, keyring: Keyring | None, verify_incoming: bool, max_bytes: int, label: bytes
) -> tuple[StreamMessage, int] | None:
    if not buf:
        return None
    kind = buf[0]
    if kind == MsgType.ENCRYPT:
        if keyring is None:
            raise GossipDecodeError("Remote state is encrypted and encryption is not configured")
        if len(buf) < 5:
            return None
        size = struct.unpack_from(">I", buf, 1)[0]
        if size > max_bytes:
            raise GossipDecodeError(f"encrypted stream of {size} bytes exceeds {max_bytes}")
        if len(buf) < 5 + size:
            return None
        plain = keyring.decrypt(bytes(buf[5 : 5 + size]), aad=bytes(buf[:5]) + label)
        return _parse_whole(plain, max_bytes, may_compress=True), 5 + size
    if keyring is not None and verify_incoming:
        raise GossipDecodeError("Encryption is configured but remote state is not encrypted")
    if kind == MsgType.COMPRESS:
        u = _feed(buf, max_bytes)
        obj = _next(u, buf, max_bytes)
        if obj is None:
            return None
        inner = _inflate_struct(struct_from_map(Compress, obj), 2 * max_bytes)
        return _parse_whole(inner, 2 * max_bytes, may_compress=False), 1 + u.tell()
    return _parse_plain(buf, max_bytes)


def _parse_whole(data: bytes, max_bytes: int, *, may_compress: bool) -> StreamMessage:
    """A message that must be complete (decrypted or inflated content)."""
    if not data:
        raise GossipDecodeError("empty stream message")
    if data[0] == MsgType.COMPRESS and may_compress:
        data = _inflate(data, 2 * max_bytes)
        if not data:
            raise GossipDecodeError("empty decompressed stream message")
        max_bytes *= 2
    got = _parse_plain(data, max_bytes)
    if got is None:
        raise GossipDecodeError("truncated stream message")
    return got[0]


def _feed(buf: bytes, max_bytes: int) -> Any:
    u = new_unpacker(max_bytes)
    u.feed(memoryview(buf)[1 : 1 + max_bytes])
    return u


def _next(u: Any, buf: bytes, max_bytes: int, *, skip: bool = False) -> object | None:
    """The next msgpack value from ``u`` (``True`` if skipped), or None when more bytes are needed."""
    try:
        if skip:
            u.skip()
            return True
        return cast(object, u.unpack())
    except DECODE_ERRORS as e:
        if not isinstance(e, OUT_OF_DATA):
            raise GossipDecodeError(f"malformed stream: {type(e).__name__}: {e}") from None
    if len(buf) - 1 >= max_bytes:
        raise GossipDecodeError(f"stream message exceeds {max_bytes} bytes")
    return None


def _tail(u: Any, buf: bytes, size: int, max_bytes: int) -> tuple[bytes, int] | None:
    """The ``size`` raw bytes after the msgpack values read so far, and the message's total length."""
    start = 1 + u.tell()
    if size < 0 or start - 1 + size > max_bytes:
        raise GossipDecodeError(f"declared raw length {size} is negative or exceeds {max_bytes} bytes")
    if len(buf) < start + size:
        return None
    return bytes(buf[start : start + size]), start + size


_SINGLE_MAP_TYPES: Final[dict[int, type[Ping | Ack | ErrResp]]] = {
    MsgType.PING: Ping,
    MsgType.ACK: Ack,
    MsgType.ERR: ErrResp,
}


def _parse_plain(buf: bytes, max_bytes: int) -> tuple[StreamMessage, int] | None:
    kind = buf[0]
    single = _SINGLE_MAP_TYPES.get(kind)
    if kind not in (MsgType.PUSH_PULL, MsgType.USER) and single is None:
        raise GossipDecodeError(f"unexpected stream message type {kind}")
    u = _feed(buf, max_bytes)
    obj = _next(u, buf, max_bytes)
    if obj is None:
        return None
    if single is not None:
        return struct_from_map(single, obj), 1 + u.tell()
    if kind == MsgType.USER:
        size = struct_from_map(UserMsgHeader, obj).user_msg_len
        tail = _tail(u, buf, size, max_bytes)
        return None if tail is None else (UserStream(payload=tail[0]), tail[1])
    return _parse_push_pull(u, buf, struct_from_map(PushPullHeader, obj), max_bytes)


def _parse_push_pull(
    u: Any, buf: bytes, header: PushPullHeader, max_bytes: int
) -> tuple[StreamMessage, int] | None:
    """The node states and user state after the header; they are first skipped (cheap) to find out
    whether everything has arrived, and only then decoded."""
    if not 0 <= header.nodes <= MAX_PUSH_STATE_NODES:
        raise GossipDecodeError(f"push/pull declares {header.nodes} nodes")
    states_at = u.tell()
    for _ in range(header.nodes):
        if _next(u, buf, max_bytes, skip=True) is None:
            return None
    tail = _tail(u, buf, header.user_state_len, max_bytes)
    if tail is None:
        return None
    u = new_unpacker(max_bytes)
    u.feed(memoryview(buf)[1 + states_at : tail[1]])
    states = [struct_from_map(PushNodeState, _next(u, buf, max_bytes)) for _ in range(header.nodes)]
    return PushPull(header=header, states=states, user_state=tail[0]), tail[1]
