"""memberlist messages and their msgpack encoding, typed exactly like Go's go-msgpack 0.5.5 (spec §1.1–1.2).

Encoding (what Go emits, byte for byte): ``[type byte][msgpack map]``, keys are the Go field names in
alphabetical order, ``str`` and ``bytes`` both packed as the old raw-string family (``use_bin_type=False``),
integers in their smallest form, ``Source*`` fields left out when zero, an empty ``Ack.payload`` written as
nil (Go's nil slice).

Decoding (what Go accepts): the body must be a map with string keys; unknown keys are skipped, missing keys
and nil values give zero values; Go ``string`` fields take only the str family (a ``bin`` there is an error
in Go) and must be valid UTF-8; ``[]byte`` fields take str, bin or nil; integer fields take any msgpack
integer within the Go type's range (uint16, uint32, int64); ``bool`` fields take only booleans (or nil).
Bytes after the map are ignored, as Go does. Any violation raises :class:`GossipDecodeError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar, cast

from discoverd.errors import GossipDecodeError, MissingExtra

try:
    import msgpack
except ImportError as exc:
    raise MissingExtra("msgpack", "gossip", "the gossip registry backend (gossip://)") from exc


class MsgType(enum.IntEnum):
    """The type byte in front of every message (spec §1.1)."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13
    HAS_LABEL = 244


class NodeState(enum.IntEnum):
    """memberlist ``NodeStateType`` (a Go int on the wire)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


PROTOCOL_MIN: Final = 1
PROTOCOL_MAX: Final = 5
META_MAX_SIZE: Final = 512
VSN_LEN: Final = 6

#: Exceptions msgpack (and the conversions) may raise on hostile input; decoders turn them into
#: :class:`GossipDecodeError`. ``msgpack.UnpackException`` covers OutOfData and BufferFull; ExtraData,
#: FormatError, StackError and UnicodeDecodeError are ValueErrors.
DECODE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    ValueError,
    TypeError,
    OverflowError,
    KeyError,
    IndexError,
    RecursionError,
    msgpack.UnpackException,
)

#: What an unpacker from :func:`new_unpacker` raises when it needs more bytes (one of
#: :data:`DECODE_ERRORS`). This module is the one that imports msgpack; the rest of the gossip code uses
#: these names.
OUT_OF_DATA: Final[type[Exception]] = msgpack.OutOfData

#: Largest map/array accepted while unpacking. memberlist maps have at most 8 keys; msgpack preallocates
#: containers from their declared length, so a hostile header must not be believed.
MAX_CONTAINER_LEN: Final = 1024


def make_vsn(pcur: int = 2, dmin: int = 0, dmax: int = 0, dcur: int = 0) -> bytes:
    """The 6-byte ``Vsn``: ``[PROTOCOL_MIN, PROTOCOL_MAX, pcur, dmin, dmax, dcur]`` (ValueError if > 255)."""
    return bytes((PROTOCOL_MIN, PROTOCOL_MAX, pcur, dmin, dmax, dcur))


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    seq_no: int
    node: str = ""
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class IndirectPing:
    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    seq_no: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack:
    seq_no: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspect:
    incarnation: int
    node: str
    from_: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dead:
    incarnation: int
    node: str
    from_: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Alive:
    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes = b""
    vsn: bytes = make_vsn()


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrResp:
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPullHeader:
    nodes: int
    user_state_len: int
    join: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PushNodeState:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: int
    vsn: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMsgHeader:
    user_msg_len: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Compress:
    algo: int
    buf: bytes


Packet: TypeAlias = Ping | IndirectPing | Ack | Nack | Suspect | Dead | Alive | ErrResp | Compress
Struct: TypeAlias = PushPullHeader | PushNodeState | UserMsgHeader
Message: TypeAlias = Packet | Struct
M = TypeVar("M", bound=Message)


# -- schemas -----------------------------------------------------------------------------------------------

_U16, _U32, _INT, _STR, _BYTES, _BOOL = "u16", "u32", "int", "str", "bytes", "bool"
_INT_RANGE: Final = {_U16: (0, 0xFFFF), _U32: (0, 0xFFFF_FFFF), _INT: (-(1 << 63), (1 << 63) - 1)}
_ZERO: Final[dict[str, object]] = {_U16: 0, _U32: 0, _INT: 0, _STR: "", _BYTES: b"", _BOOL: False}
_OMIT, _NIL = "omitempty", "nil-if-empty"


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    key: str
    kind: str
    flag: str = ""


def _fields(*spec: tuple[str, str, str] | tuple[str, str, str, str]) -> tuple[_Field, ...]:
    return tuple(sorted((_Field(*s) for s in spec), key=lambda f: f.key))


_SOURCE = (
    ("source_addr", "SourceAddr", _BYTES, _OMIT),
    ("source_port", "SourcePort", _U16, _OMIT),
    ("source_node", "SourceNode", _STR, _OMIT),
)
_ACCUSE = (("incarnation", "Incarnation", _U32), ("node", "Node", _STR), ("from_", "From", _STR))
_SCHEMAS: Final[dict[type, tuple[_Field, ...]]] = {
    Ping: _fields(("seq_no", "SeqNo", _U32), ("node", "Node", _STR), *_SOURCE),
    IndirectPing: _fields(
        ("seq_no", "SeqNo", _U32),
        ("target", "Target", _BYTES),
        ("port", "Port", _U16),
        ("node", "Node", _STR),
        ("nack", "Nack", _BOOL),
        *_SOURCE,
    ),
    Ack: _fields(("seq_no", "SeqNo", _U32), ("payload", "Payload", _BYTES, _NIL)),
    Nack: _fields(("seq_no", "SeqNo", _U32)),
    Suspect: _fields(*_ACCUSE),
    Dead: _fields(*_ACCUSE),
    Alive: _fields(
        ("incarnation", "Incarnation", _U32),
        ("node", "Node", _STR),
        ("addr", "Addr", _BYTES),
        ("port", "Port", _U16),
        ("meta", "Meta", _BYTES),
        ("vsn", "Vsn", _BYTES),
    ),
    ErrResp: _fields(("error", "Error", _STR)),
    PushPullHeader: _fields(
        ("nodes", "Nodes", _INT), ("user_state_len", "UserStateLen", _INT), ("join", "Join", _BOOL)
    ),
    PushNodeState: _fields(
        ("name", "Name", _STR),
        ("addr", "Addr", _BYTES),
        ("port", "Port", _U16),
        ("meta", "Meta", _BYTES),
        ("incarnation", "Incarnation", _U32),
        ("state", "State", _INT),
        ("vsn", "Vsn", _BYTES),
    ),
    UserMsgHeader: _fields(("user_msg_len", "UserMsgLen", _INT)),
    Compress: _fields(("algo", "Algo", _INT), ("buf", "Buf", _BYTES)),
}
_KEYS: Final = {cls: {f.key: f for f in fields} for cls, fields in _SCHEMAS.items()}
_TYPE_OF: Final[dict[type, MsgType]] = {
    Ping: MsgType.PING,
    IndirectPing: MsgType.INDIRECT_PING,
    Ack: MsgType.ACK,
    Suspect: MsgType.SUSPECT,
    Alive: MsgType.ALIVE,
    Dead: MsgType.DEAD,
    Compress: MsgType.COMPRESS,
    Nack: MsgType.NACK,
    ErrResp: MsgType.ERR,
}
_CLASS_OF: Final[dict[int, type[Packet]]] = {int(t): c for c, t in _TYPE_OF.items()}


# -- encoding ----------------------------------------------------------------------------------------------


def _check(cls: type, f: _Field, v: object) -> None:
    """ValueError unless ``v`` is encodable as the Go type of ``f``."""
    if f.kind in _INT_RANGE:
        lo, hi = _INT_RANGE[f.kind]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{cls.__name__}.{f.attr}: {v!r} is not a Go {f.kind}")
    elif not isinstance(v, {_STR: str, _BYTES: bytes, _BOOL: bool}[f.kind]):
        raise ValueError(f"{cls.__name__}.{f.attr}: {type(v).__name__} where {f.kind} is expected")
    if f.key == "Vsn" and len(cast(bytes, v)) != VSN_LEN:
        raise ValueError(f"{cls.__name__}.vsn must be exactly {VSN_LEN} bytes, got {len(cast(bytes, v))}")


def _body(msg: Message) -> bytes:
    cls = type(msg)
    out: dict[str, object] = {}
    for f in _SCHEMAS[cls]:
        v = getattr(msg, f.attr)
        _check(cls, f, v)
        if not v and f.flag:
            if f.flag == _OMIT:
                continue
            v = None
        out[f.key] = v
    try:
        return cast(bytes, msgpack.packb(out, use_bin_type=False))
    except UnicodeEncodeError as e:  # a str holding lone surrogates
        raise ValueError(f"{cls.__name__}: a string is not valid UTF-8: {e}") from None


def encode(msg: Packet) -> bytes:
    """``[type byte][msgpack map]`` exactly as Go writes it. ValueError if a field has the wrong type or
    is out of its Go range, or if an Alive's ``vsn`` is not exactly 6 bytes."""
    t = _TYPE_OF.get(type(msg))
    if t is None:
        raise ValueError(f"not a packet message: {type(msg).__name__}")
    return bytes((t,)) + _body(msg)


def encode_struct(s: Struct) -> bytes:
    """The msgpack map of a stream struct, without a type byte (same rules and errors as :func:`encode`)."""
    if type(s) not in (PushPullHeader, PushNodeState, UserMsgHeader):
        raise ValueError(f"not a stream struct: {type(s).__name__}")
    return _body(s)


# -- decoding ----------------------------------------------------------------------------------------------


def new_unpacker(max_len: int) -> Any:
    """A ``msgpack.Unpacker`` for feeding up to ``max_len`` bytes: raw strings come back as ``str`` (with
    undecodable bytes surrogate-escaped, so ``bytes`` fields can be restored exactly) and ``bin`` as
    ``bytes``; string/bin/ext lengths above ``max_len`` and containers above :data:`MAX_CONTAINER_LEN` are
    refused (ValueError) instead of being waited for or preallocated."""
    size = max(max_len, 1)
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        max_buffer_size=size,
        read_size=min(size, 16384),
        max_str_len=size,
        max_bin_len=size,
        max_ext_len=size,
        max_array_len=MAX_CONTAINER_LEN,
        max_map_len=MAX_CONTAINER_LEN,
    )


def _convert(f: _Field, v: object) -> object:
    if v is None:
        return _ZERO[f.kind]
    if f.kind == _STR:
        if not isinstance(v, str):
            raise GossipDecodeError(f"{f.key}: Go string field got {type(v).__name__}")
        try:
            v.encode()
        except UnicodeEncodeError:
            raise GossipDecodeError(f"{f.key}: string is not valid UTF-8") from None
        return v
    if f.kind == _BYTES:
        if isinstance(v, str):
            return v.encode("utf-8", "surrogateescape")
        if not isinstance(v, bytes):
            raise GossipDecodeError(f"{f.key}: Go []byte field got {type(v).__name__}")
        return v
    if f.kind == _BOOL:
        if not isinstance(v, bool):
            raise GossipDecodeError(f"{f.key}: Go bool field got {type(v).__name__}")
        return v
    lo, hi = _INT_RANGE[f.kind]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise GossipDecodeError(f"{f.key}: {v!r} does not fit a Go {f.kind}")
    return v


def struct_from_map(cls: type[M], obj: object) -> M:
    """Build ``cls`` from an unpacked msgpack value (from :func:`new_unpacker`) with Go's decoding rules;
    GossipDecodeError if it is not a map with string keys or a known field has the wrong kind."""
    if not isinstance(obj, dict):
        raise GossipDecodeError(f"{cls.__name__}: expected a msgpack map, got {type(obj).__name__}")
    keys = _KEYS[cls]
    values = {f.attr: _ZERO[f.kind] for f in _SCHEMAS[cls]}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise GossipDecodeError(f"{cls.__name__}: map key of type {type(k).__name__}")
        f = keys.get(k)
        if f is not None:
            values[f.attr] = _convert(f, v)
    make = cast(Callable[..., M], cls)
    return make(**values)


def unpack_one(data: bytes | memoryview) -> object:
    """The first msgpack value in ``data`` (trailing bytes ignored); GossipDecodeError if malformed."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            unicode_errors="surrogateescape",
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
        )
    except msgpack.ExtraData as e:
        return e.unpacked
    except DECODE_ERRORS as e:
        raise GossipDecodeError(f"malformed msgpack: {type(e).__name__}: {e}") from None


def decode(data: bytes) -> Packet:
    """Decode ``[type byte][msgpack map]`` for types 0–5, 9, 11 and 13 (see the module docstring).

    GossipDecodeError for an empty buffer, any other type, a malformed or truncated map, wrong field kinds,
    integers outside their Go range or non-UTF-8 strings. A ``vsn`` is returned as received (any length):
    check it before re-encoding.
    """
    if not data:
        raise GossipDecodeError("empty message")
    cls = _CLASS_OF.get(data[0])
    if cls is None:
        raise GossipDecodeError(f"message type {data[0]} is not a decodable packet message")
    return struct_from_map(cls, unpack_one(memoryview(data)[1:]))
