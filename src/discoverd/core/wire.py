"""Byte-exact encoders of the bilibili/discovery JSON answers (spec §1.2, §2.3, §12).

* standard envelope: ``{"code":C,"message":"M","ttl":1,"data":D}`` (``data`` omitted when absent);
* map envelope (``polls`` success, ``poll`` not-found): keys sorted, no ``ttl``;
* InstanceInfo: ``{"instances":{zone:[...]},"latest_timestamp":N}``, zones sorted like Go's maps.

Answers are built from pre-encoded pieces so that one change is encoded once and the same bytes are
handed to every waiter; :func:`instance_info` caches per app version in ``App.cache``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from discoverd import jsoncodec
from discoverd.core.registry_state import App
from discoverd.model import Instance


def dumps(obj: Any) -> bytes:
    """:func:`discoverd.jsoncodec.dumps`: integers kept exact (int64 nanoseconds never go through a float)."""
    return jsoncodec.dumps(obj)


def instance_obj(ins: Instance, *, null_metadata: bool = False) -> dict[str, Any]:
    """The instance as a dict in the server's field order, metadata keys sorted (Go map order)."""
    obj = ins.to_wire(null_metadata=null_metadata)
    meta = obj["metadata"]
    if meta:
        obj["metadata"] = dict(sorted(meta.items()))
    return obj


def envelope(code: int, data: bytes | None = None, message: str | None = None) -> bytes:
    """The standard envelope; ``data`` is pre-encoded JSON (``b"null"`` for a typed nil)."""
    msg = dumps(str(code) if message is None else message)
    head = b'{"code":%d,"message":%s,"ttl":1' % (code, msg)
    if data is None:
        return head + b"}"
    return head + b',"data":' + data + b"}"


def map_envelope(
    code: int,
    *,
    message: str | None = None,
    data: bytes | None = None,
    missing: bytes | None = None,
) -> bytes:
    """The map envelope: sorted keys ``code``, ``data``, ``error``, ``message``; no ``ttl``.

    ``missing`` is the pre-encoded ``-404`` list (``b"null"`` when none); omitted when ``None``.
    """
    parts = [b'"code":%d' % code]
    if data is not None:
        parts.append(b'"data":' + data)
    if missing is not None:
        parts.append(b'"error":{"-404":' + missing + b"}")
    parts.append(b'"message":' + dumps(str(code) if message is None else message))
    return b"{" + b",".join(parts) + b"}"


def instance_info(app: App, zone: str, status: int) -> bytes:
    """InstanceInfo of ``app`` with the ``status`` bitmask and optional ``zone`` filter, cached.

    A zone whose instances are all filtered out still appears, with an empty list (spec §2.3).
    """
    ck = (zone, status)
    cached = app.cache.get(ck)
    if cached is not None:
        return cached
    zones = {
        z: [instance_obj(i) for i in hosts.values() if i.status & status]
        for z, hosts in sorted(app.zones.items())
        if not zone or z == zone
    }
    out = dumps({"instances": zones, "latest_timestamp": app.latest})
    app.cache[ck] = out
    return out


def fetch_body(app: App, zone: str, status: int) -> bytes:
    """The whole success body of a ``fetch`` (the envelope around :func:`instance_info`), cached per
    app version like it: a fetch of an unchanged app copies no JSON."""
    ck = ("fetch", zone, status)
    cached = app.cache.get(ck)
    if cached is None:
        cached = app.cache[ck] = envelope(0, instance_info(app, zone, status))
    return cached


_RENEW_MARK = -0x5EED


def renewed(app: App, ins: Instance) -> bytes:
    """The instance's JSON for a renew answer, re-using its pre-encoded parts (only the renew
    timestamp changes between renews; a register replaces the object, a ``set`` clears the parts)."""
    key = (ins.zone, ins.hostname)
    cached = app.parts.get(key)
    if cached is None or cached[0] is not ins:
        obj = instance_obj(ins)
        obj["renew_timestamp"] = _RENEW_MARK
        head, _, tail = dumps(obj).partition(b"%d" % _RENEW_MARK)
        cached = app.parts[key] = (ins, head, tail)
    return b"%s%d%s" % (cached[1], ins.renew_timestamp, cached[2])


def empty_info(latest: int) -> bytes:
    """The InstanceInfo of a fetch whose zone is absent (spec §12.1)."""
    return b'{"instances":{},"latest_timestamp":%d}' % latest


def app_map(items: Iterable[tuple[str, bytes]]) -> bytes:
    """``{"<appid>": <pre-encoded>, ...}`` with keys sorted like Go's maps."""
    return b"{" + b",".join(dumps(k) + b":" + v for k, v in sorted(items)) + b"}"


def string_list(items: Sequence[str] | None) -> bytes:
    """A JSON array of strings, or ``null`` for ``None``/empty (Go's nil slice)."""
    return dumps(list(items)) if items else b"null"


def fetch_all(apps: Iterable[App]) -> bytes:
    """``fetch/all`` data: every instance grouped by appid only (envs merged), metadata may be null."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for app in apps:
        grouped.setdefault(app.appid, []).extend(instance_obj(i, null_metadata=True) for i in app.instances())
    return dumps(dict(sorted(grouped.items())))
