"""The go-micro gossip registry layer, pure half: the ``Update`` protobuf, the ``Service`` JSON and the
mapping to discoverd :class:`~discoverd.model.Instance` (spec Part 2.2–2.5).

**Update protobuf** (``gossip.proto``, proto3): ``expires`` 1 uint64 (sender's absolute Unix ns), ``type`` 2
int32, ``action`` 3 int32, ``metadata`` 6 map<string,string>, ``data`` 7 bytes (the Service JSON).
:func:`encode_update` writes fields in number order, omits zero scalars / empty bytes (proto3) and writes map
entries sorted by key, each with both key (1) and value (2) as Go does, so a register update is byte-identical
with go-micro's. :func:`decode_update` follows Go's decoder: unknown fields of wire types 0/1/2/5 are skipped
(a known field with an unexpected wire type counts as unknown), the last scalar wins, map entries accumulate,
int32 values are the low 32 bits of the varint (negative ones take 10 bytes). Groups (3/4), wire types 6/7,
field number 0, truncation, overlong varints and invalid UTF-8 in map strings raise GossipDecodeError.

**Service JSON**: :func:`service_to_json` writes Go's field order and ``[]``/``{}`` for empty lists and maps
(``null`` only for an absent endpoint request/response). :func:`service_from_json` is Go-tolerant: ``null``
for any field is its zero value, ``null`` entries of lists are skipped, missing/unknown keys are fine, keys
match ASCII-case-insensitively like ``encoding/json``; wrong JSON types raise :class:`GossipDecodeError`,
as does a ``Value`` tree deeper than :data:`MAX_VALUE_DEPTH`. The model dataclasses are frozen; their lists
and dicts are read-only by convention (the functions here never mutate them and share unchanged parts).

**Mapping to discoverd instances.** A Service holds one version of app ``name``; each node is one Instance:

* ``appid = service.name``, ``version = service.version``, ``hostname = node.id``;
* ``addrs = node.metadata["addrs"].split()`` if that key exists, else ``[node.address]`` (``[]`` if empty);
* ``zone`` / ``env`` / ``region`` = ``node.metadata[...]`` (default ``""``);
* ``status = int(node.metadata["status"])`` if it is ``"1"`` or ``"2"``, else UP;
* ``metadata = {**service.metadata, **node.metadata}`` minus :data:`RESERVED_KEYS` (always a dict);
* timestamps are 0 (go-micro has none).

:func:`instance_to_service` is the inverse: one node, ``address`` = host:port of the first addr with any
``scheme://`` prefix (and path) stripped (a bare addr is kept as is; ``""`` without addrs), node metadata =
the instance metadata without reserved keys, plus ``region``/``zone``/``env`` when non-empty, ``status`` when
not UP, ``addrs`` (space-joined) unless the addrs are exactly ``[address]``. Round trip instance → service →
instance is the identity up to timestamps, ``None`` metadata (becomes ``{}``), reserved keys inside the
instance metadata (dropped), statuses other than 1/2 (become UP) and addrs that are empty or hold whitespace.

Merge/Remove and the registry state live in :mod:`discoverd.core.gossip.micro_state`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from discoverd import jsoncodec
from discoverd.errors import GossipDecodeError
from discoverd.model import UP, Instance

ACTION_CREATE: Final = 1
ACTION_DELETE: Final = 2
ACTION_UPDATE: Final = 3
ACTION_SYNC: Final = 4
TYPE_SERVICE: Final = 1
CONTENT_TYPE: Final = "application/json"

#: Node metadata keys that carry Instance fields (never part of ``Instance.metadata``).
RESERVED_KEYS: Final = frozenset({"addrs", "zone", "env", "region", "status"})
#: Deepest ``Value`` nesting accepted from the wire (a ``request`` value is depth 1).
MAX_VALUE_DEPTH: Final = 32

_U64_MAX: Final = (1 << 64) - 1
_MAX_FIELD_NUMBER: Final = (1 << 29) - 1


def _default_metadata() -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE}


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """One go-micro gossip update. ``expires`` is the sender's absolute Unix time in ns (0 = none)."""

    expires: int = 0
    type: int = TYPE_SERVICE
    action: int = ACTION_CREATE
    metadata: dict[str, str] = field(default_factory=_default_metadata)
    data: bytes = b""


# --- protobuf -----------------------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_bytes(out: bytearray, key: int, value: bytes) -> None:
    out.append(key)
    _put_varint(out, len(value))
    out += value


def _int32_wire(value: int, name: str) -> int:
    if not -(1 << 31) <= value < (1 << 31):
        raise ValueError(f"update: {name}={value} is not an int32")
    return value & _U64_MAX


def encode_update(u: Update) -> bytes:
    """The proto3 encoding of ``u`` (byte-identical with Go's); ValueError for out-of-range numbers."""
    out = bytearray()
    if u.expires:
        if not 0 < u.expires <= _U64_MAX:
            raise ValueError(f"update: expires={u.expires} is not a uint64")
        out.append(0x08)
        _put_varint(out, u.expires)
    for key, value, name in ((0x10, u.type, "type"), (0x18, u.action, "action")):
        if value:
            out.append(key)
            _put_varint(out, _int32_wire(value, name))
    for mkey in sorted(u.metadata):
        entry = bytearray()
        _put_bytes(entry, 0x0A, mkey.encode())
        _put_bytes(entry, 0x12, u.metadata[mkey].encode())
        _put_bytes(out, 0x32, bytes(entry))
    if u.data:
        _put_bytes(out, 0x3A, u.data)
    return bytes(out)


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for i in range(10):
        if pos >= len(buf):
            raise GossipDecodeError("update: truncated varint")
        byte = buf[pos]
        pos += 1
        if i == 9 and byte > 1:
            raise GossipDecodeError("update: varint longer than 64 bits")
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return result, pos
    raise AssertionError("unreachable")  # pragma: no cover - the 10th byte always returns or raises


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of every field: an int for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        tag, pos = _get_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if not 0 < number <= _MAX_FIELD_NUMBER:
            raise GossipDecodeError(f"update: invalid field number {number}")
        value: int | bytes
        if wire == 0:
            value, pos = _get_varint(buf, pos)
        elif wire in (1, 2, 5):
            if wire == 2:
                size, pos = _get_varint(buf, pos)
            else:
                size = 8 if wire == 1 else 4
            if size > len(buf) - pos:
                raise GossipDecodeError(f"update: field {number} runs past the end")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise GossipDecodeError(f"update: unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def _utf8(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise GossipDecodeError("update: metadata string is not valid UTF-8") from exc


def _map_entry(buf: bytes) -> tuple[str, str]:
    key = value = ""
    for number, wire, raw in _fields(buf):
        if wire == 2 and isinstance(raw, bytes) and number in (1, 2):
            if number == 1:
                key = _utf8(raw)
            else:
                value = _utf8(raw)
    return key, value


def decode_update(data: bytes) -> Update:
    """Decode an Update; absent fields are proto3 zeros (``type``/``action`` 0, empty metadata)."""
    buf = bytes(data)
    expires = type_ = action = 0
    metadata: dict[str, str] = {}
    payload = b""
    for number, wire, raw in _fields(buf):
        if isinstance(raw, int):
            if number == 1:
                expires = raw
            elif number == 2:
                type_ = _int32(raw)
            elif number == 3:
                action = _int32(raw)
        elif wire == 2 and number == 6:
            key, value = _map_entry(raw)
            metadata[key] = value
        elif wire == 2 and number == 7:
            payload = raw
    return Update(expires=expires, type=type_, action=action, metadata=metadata, data=payload)


# --- Service model and JSON ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Value:
    """A go-micro endpoint value description (recursive)."""

    name: str = ""
    type: str = ""
    values: list[Value] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A go-micro endpoint: its request/response descriptions and metadata."""

    name: str = ""
    request: Value | None = None
    response: Value | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MicroNode:
    """A go-micro registry node: one process of one service version (``address`` is host:port)."""

    id: str = ""
    address: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Service:
    """A go-micro registry service: one version of ``name`` and its nodes."""

    name: str = ""
    version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    nodes: list[MicroNode] = field(default_factory=list)


def _value_obj(v: Value | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"name": v.name, "type": v.type, "values": [_value_obj(x) for x in v.values]}


def _sorted(m: dict[str, str]) -> dict[str, str]:
    return dict(sorted(m.items()))


def service_obj(svc: Service) -> dict[str, Any]:
    """The JSON object of ``svc``: Go's struct field order, map keys sorted (as Go's encoding/json does)."""
    return {
        "name": svc.name,
        "version": svc.version,
        "metadata": _sorted(svc.metadata),
        "endpoints": [
            {
                "name": e.name,
                "request": _value_obj(e.request),
                "response": _value_obj(e.response),
                "metadata": _sorted(e.metadata),
            }
            for e in svc.endpoints
        ],
        "nodes": [{"id": n.id, "address": n.address, "metadata": _sorted(n.metadata)} for n in svc.nodes],
    }


def service_to_json(svc: Service) -> bytes:
    """The go-micro JSON of ``svc``."""
    return jsoncodec.dumps(service_obj(svc))


def _object(obj: object, what: str, names: frozenset[str]) -> dict[str, object]:
    """The known fields of JSON object ``obj`` (exact or ASCII-case-insensitive key match, last one wins)."""
    if not isinstance(obj, dict):
        raise GossipDecodeError(f"{what}: expected an object, got {type(obj).__name__}")
    out: dict[str, object] = {}
    for key, value in obj.items():
        if key in names:
            out[key] = value
        elif isinstance(key, str) and key.isascii() and key.lower() in names:
            out[key.lower()] = value
    return out


def _str(fields: dict[str, object], name: str, what: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise GossipDecodeError(f"{what}: {name} must be a string")
    return value


def _str_map(fields: dict[str, object], name: str, what: str) -> dict[str, str]:
    value = fields.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GossipDecodeError(f"{what}: {name} must be an object")
    out: dict[str, str] = {}
    for key, item in value.items():
        if item is not None and not isinstance(item, str):
            raise GossipDecodeError(f"{what}: {name}[{key!r}] must be a string")
        out[key] = item or ""
    return out


def _list(fields: dict[str, object], name: str, what: str) -> list[object]:
    value = fields.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise GossipDecodeError(f"{what}: {name} must be an array")
    return [item for item in value if item is not None]


_VALUE_KEYS: Final = frozenset({"name", "type", "values"})
_ENDPOINT_KEYS: Final = frozenset({"name", "request", "response", "metadata"})
_NODE_KEYS: Final = frozenset({"id", "address", "metadata"})
_SERVICE_KEYS: Final = frozenset({"name", "version", "metadata", "endpoints", "nodes"})


def _value(obj: object, depth: int) -> Value | None:
    if obj is None:
        return None
    if depth > MAX_VALUE_DEPTH:
        raise GossipDecodeError(f"value: nested deeper than {MAX_VALUE_DEPTH}")
    f = _object(obj, "value", _VALUE_KEYS)
    children = [_value(x, depth + 1) for x in _list(f, "values", "value")]
    return Value(_str(f, "name", "value"), _str(f, "type", "value"), [c for c in children if c is not None])


def _endpoint(obj: object) -> Endpoint:
    f = _object(obj, "endpoint", _ENDPOINT_KEYS)
    return Endpoint(
        _str(f, "name", "endpoint"),
        _value(f.get("request"), 1),
        _value(f.get("response"), 1),
        _str_map(f, "metadata", "endpoint"),
    )


def _node(obj: object) -> MicroNode:
    f = _object(obj, "node", _NODE_KEYS)
    return MicroNode(_str(f, "id", "node"), _str(f, "address", "node"), _str_map(f, "metadata", "node"))


def service_from_json(obj: object) -> Service:
    """The Service of a parsed JSON value (see the module docstring); GossipDecodeError if malformed."""
    f = _object(obj, "service", _SERVICE_KEYS)
    return Service(
        _str(f, "name", "service"),
        _str(f, "version", "service"),
        _str_map(f, "metadata", "service"),
        [_endpoint(e) for e in _list(f, "endpoints", "service")],
        [_node(n) for n in _list(f, "nodes", "service")],
    )


def decode_service(data: bytes) -> Service:
    """Parse and decode a Service JSON document; GossipDecodeError on invalid JSON or a malformed service."""
    try:
        obj = jsoncodec.loads(data)
    except jsoncodec.DecodeError as exc:
        raise GossipDecodeError(f"service: invalid JSON: {exc}") from exc
    return service_from_json(obj)


def service_update(svc: Service, action: int, *, expires: int = 0) -> Update:
    """The Update announcing ``svc`` (``action`` ACTION_CREATE or ACTION_DELETE), as go-micro builds it."""
    return Update(expires=expires, type=TYPE_SERVICE, action=action, data=service_to_json(svc))


# --- mapping to discoverd instances -------------------------------------------------------------------------


def node_instance(svc: Service, node: MicroNode) -> Instance:
    """The Instance of ``node`` of ``svc`` (module docstring)."""
    meta = node.metadata
    raw_addrs = meta.get("addrs")
    addrs = raw_addrs.split() if raw_addrs is not None else [node.address] if node.address else []
    raw_status = meta.get("status")
    status = int(raw_status) if raw_status in ("1", "2") else UP
    merged = {**svc.metadata, **meta}
    return Instance(
        region=meta.get("region", ""),
        zone=meta.get("zone", ""),
        env=meta.get("env", ""),
        appid=svc.name,
        hostname=node.id,
        addrs=addrs,
        version=svc.version,
        metadata={k: v for k, v in merged.items() if k not in RESERVED_KEYS},
        status=status,
    )


def service_instances(svc: Service) -> list[Instance]:
    """One Instance per node of ``svc``, in node order."""
    return [node_instance(svc, node) for node in svc.nodes]


def host_port(addr: str) -> str:
    """``addr`` without a ``scheme://`` prefix and anything after the authority; bare addrs unchanged."""
    if "://" not in addr:
        return addr
    rest = addr.split("://", 1)[1]
    for sep in "/?#":
        rest = rest.split(sep, 1)[0]
    return rest


def instance_to_service(ins: Instance) -> Service:
    """The one-node Service announcing ``ins`` (the inverse of :func:`node_instance`)."""
    address = host_port(ins.addrs[0]) if ins.addrs else ""
    meta = {k: v for k, v in (ins.metadata or {}).items() if k not in RESERVED_KEYS}
    for key, value in (("region", ins.region), ("zone", ins.zone), ("env", ins.env)):
        if value:
            meta[key] = value
    if ins.status != UP:
        meta["status"] = str(ins.status)
    if ins.addrs != [address]:
        meta["addrs"] = " ".join(ins.addrs)
    node = MicroNode(id=ins.hostname, address=address, metadata=meta)
    return Service(name=ins.appid, version=ins.version, nodes=[node])
