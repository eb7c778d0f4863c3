"""Registry snapshots: a versioned, checksummed encoding of every instance (pure; no file I/O).

The format is JSON lines (UTF-8, each line ends with ``\\n``)::

    {"format":"discoverd-snapshot","version":1,"taken_at":NS,"apps":N,"instances":M}
    {"appid":"a","env":"dev","latest":NS,"instances":[<instance wire object>, ...]}   (N lines)
    {"end":true,"sha256":"<hex of every byte before this line>"}

* The header's ``format`` and ``version`` keys are the stable part: a later version may change
  everything after them, so they are checked first and an unknown version is refused by name.
* Instances are the protocol's wire objects with ``null`` metadata kept as ``null`` (``None`` and
  ``{}`` round-trip distinctly); integers go through :mod:`discoverd.jsoncodec`, so int64 nanoseconds
  stay exact.
* The trailer detects truncation (it is missing or incomplete) and corruption (the digest differs);
  the final newline is required, so a cut at any byte offset is an error.

Errors are :class:`SnapshotError`. The file side (atomic writes, fallback to the previous file)
lives in :mod:`discoverd.server.snapshot`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeGuard

from discoverd import jsoncodec
from discoverd.core.events import AppKey, Loaded, Source
from discoverd.core.registry_state import RegistryState
from discoverd.errors import BadRequest, DiscoverdError
from discoverd.model import Instance

FORMAT: Final = "discoverd-snapshot"
VERSION: Final = 1


class SnapshotError(DiscoverdError):
    """A snapshot could not be decoded (empty, truncated, corrupt, foreign or unsupported)."""


class SnapshotApp(NamedTuple):
    """One ``(appid, env)`` of a snapshot: its version and its instances."""

    appid: str
    env: str
    latest: int
    instances: list[Instance]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decoded snapshot: when it was taken (ns) and every app, in the order they were written."""

    taken_at: int
    apps: list[SnapshotApp]

    @property
    def instance_count(self) -> int:
        return sum(len(app.instances) for app in self.apps)

    def __repr__(self) -> str:
        return f"Snapshot(taken_at={self.taken_at}, apps={len(self.apps)}, instances={self.instance_count})"


# -- encoding ---------------------------------------------------------------------------------


def encode_snapshot(registry: RegistryState, *, taken_at: int) -> bytes:
    """Encode every app and instance of ``registry``; does not change it.

    Raises :class:`SnapshotError` if a value cannot be encoded (an integer beyond 64 bits).
    Synchronous and CPU-bound: call it where the registry is owned (the event loop), then hand the
    bytes to another thread for writing.
    """
    lines: list[bytes] = []
    total = 0
    try:
        for app in registry.apps.values():
            instances = [ins.to_wire(null_metadata=True) for ins in app.instances()]
            total += len(instances)
            obj = {"appid": app.appid, "env": app.env, "latest": app.latest, "instances": instances}
            lines.append(jsoncodec.dumps(obj))
        header = jsoncodec.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "taken_at": taken_at,
                "apps": len(lines),
                "instances": total,
            }
        )
    except jsoncodec.EncodeError as e:
        raise SnapshotError(f"snapshot: cannot encode the registry: {e}") from e
    body = b"".join(line + b"\n" for line in [header, *lines])
    trailer = jsoncodec.dumps({"end": True, "sha256": hashlib.sha256(body).hexdigest()})
    return body + trailer + b"\n"


# -- decoding ---------------------------------------------------------------------------------


def decode_snapshot(data: bytes) -> Snapshot:
    """Decode and verify a snapshot; raises :class:`SnapshotError` saying what is wrong.

    Checks, in order: empty input; a foreign format or unknown version in the header line; the
    trailer (missing → truncated) and its checksum; then the header, every app line and every
    instance (via :meth:`Instance.from_wire`), duplicates, and the counts announced by the header.
    """
    if not data:
        raise SnapshotError("snapshot is empty")
    first, nl, _ = data.partition(b"\n")
    if nl:
        _check_format(_try_loads(first))
    body = _verified_body(data)
    lines = body.split(b"\n")[:-1]  # body ends with "\n"
    header = _header(_loads(lines[0], "header"))
    apps = [_app(_loads(line, f"line {n}"), n) for n, line in enumerate(lines[1:], start=2)]
    _check_unique(apps)
    total = sum(len(app.instances) for app in apps)
    if (len(apps), total) != (header["apps"], header["instances"]):
        raise SnapshotError(
            f"snapshot: header announces {header['apps']} apps and {header['instances']} instances, "
            f"found {len(apps)} and {total}"
        )
    return Snapshot(taken_at=header["taken_at"], apps=apps)


def _verified_body(data: bytes) -> bytes:
    """Everything before the trailer, once the trailer is found and its digest matches."""
    if not data.endswith(b"\n"):
        raise SnapshotError("snapshot is truncated: it does not end with a newline")
    body, nl, last = data[:-1].rpartition(b"\n")
    trailer = _try_loads(last) if nl else None
    if not (isinstance(trailer, dict) and trailer.get("end") is True):
        raise SnapshotError("snapshot is truncated: the end-of-snapshot trailer is missing")
    digest = trailer.get("sha256")
    if set(trailer) != {"end", "sha256"} or not isinstance(digest, str):
        raise SnapshotError(f"snapshot trailer is malformed: {last[:200]!r}")
    body += b"\n"
    actual = hashlib.sha256(body).hexdigest()
    if digest != actual:
        raise SnapshotError(f"snapshot is corrupt: checksum mismatch (trailer {digest}, content {actual})")
    return body


def _try_loads(line: bytes) -> object:
    try:
        return jsoncodec.loads(line)
    except jsoncodec.DecodeError:
        return None


def _loads(line: bytes, where: str) -> Any:
    try:
        return jsoncodec.loads(line)
    except jsoncodec.DecodeError as e:
        raise SnapshotError(f"snapshot {where}: bad JSON: {e}") from e


def _check_format(header: object) -> None:
    """Refuse a foreign file or an unknown version; silent when the line is not a JSON object."""
    if not isinstance(header, dict):
        return
    if header.get("format") != FORMAT:
        raise SnapshotError(f"not a discoverd snapshot (format {header.get('format')!r})")
    version = header.get("version")
    if not _is_int(version) or version != VERSION:
        raise SnapshotError(f"unsupported snapshot version {version!r} (this discoverd reads {VERSION})")


def _header(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SnapshotError("snapshot header: expected an object")
    _check_format(obj)
    for key in ("taken_at", "apps", "instances"):
        if not _is_int(obj.get(key)):
            raise SnapshotError(f"snapshot header: {key} must be an integer")
    return obj


def _app(obj: Any, lineno: int) -> SnapshotApp:
    where = f"snapshot line {lineno}"
    if not isinstance(obj, dict):
        raise SnapshotError(f"{where}: expected an app object")
    appid, env, latest, raw = (obj.get(k) for k in ("appid", "env", "latest", "instances"))
    if not (isinstance(appid, str) and isinstance(env, str) and _is_int(latest) and isinstance(raw, list)):
        raise SnapshotError(f"{where}: an app needs string appid and env, integer latest, an instances array")
    instances = []
    for n, item in enumerate(raw):
        try:
            ins = Instance.from_wire(item)
        except BadRequest as e:
            raise SnapshotError(f"{where} ({appid}/{env}), instance {n}: {e.message}") from e
        if (ins.appid, ins.env) != (appid, env):
            raise SnapshotError(f"{where}: instance {ins.hostname!r} belongs to {ins.appid}/{ins.env}")
        instances.append(ins)
    return SnapshotApp(appid, env, latest, instances)


def _check_unique(apps: list[SnapshotApp]) -> None:
    seen_apps: set[tuple[str, str]] = set()
    seen: set[tuple[str, str, str, str]] = set()
    for app in apps:
        if (app.appid, app.env) in seen_apps:
            raise SnapshotError(f"snapshot: app {app.appid}/{app.env} appears twice")
        seen_apps.add((app.appid, app.env))
        for ins in app.instances:
            if ins.key in seen:
                raise SnapshotError(f"snapshot: instance {'/'.join(ins.key)} appears twice")
            seen.add(ins.key)


def _is_int(value: object) -> TypeGuard[int]:
    """An integer and not a bool (JSON ``true`` must not pass for ``1``)."""
    return type(value) is int


# -- restoring --------------------------------------------------------------------------------


def restore(registry: RegistryState, snap: Snapshot, now: int) -> Loaded:
    """Load every instance of ``snap`` into ``registry`` exactly as stored; the event says what.

    Meant for an empty registry at start-up (into a non-empty one, the register rule decides: a
    stored copy with an older dirty timestamp does not replace a live one). The registry takes
    copies, so ``snap`` can be restored again; restored instances count toward the guard as
    registers do.

    App versions: an app that did not exist before gets exactly its stored ``latest`` (raised to
    its newest instance's ``latest_timestamp`` should the snapshot hold a lower one), so the
    ``latest_timestamp`` clients hold still matches and their polls see no spurious change. An app
    that already existed keeps the bumped version :meth:`RegistryState.load` gives it, raised to the
    stored ``latest`` if that is higher: a version never goes back.
    """
    count = 0
    apps: set[AppKey] = set()
    for app_snap in snap.apps:
        existed = registry.app(app_snap.appid, app_snap.env) is not None
        registry.load((ins.copy() for ins in app_snap.instances), now, source=Source.SNAPSHOT)
        count += len(app_snap.instances)
        app = registry.app(app_snap.appid, app_snap.env)
        if app is None:  # an app line without instances: nothing to hold a version
            continue
        apps.add(app.key)
        if existed:
            latest = max(app.latest, app_snap.latest)
        else:
            latest = max([app_snap.latest, *(i.latest_timestamp for i in app_snap.instances)])
        if latest != app.latest:
            app.latest = latest
            app.cache.clear()
    return Loaded(frozenset(apps), count, Source.SNAPSHOT)
