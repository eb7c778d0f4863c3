"""The data model shared by the server, the client and the backends (spec §2).

An :class:`Instance` is one registration of a service: keyed by ``(appid, env, zone, hostname)``.
All timestamps are integers in nanoseconds since the Unix epoch (int64 on the wire, never floats).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final

from discoverd.errors import BadRequest

#: Instance status: receives traffic.
UP: Final = 1
#: Instance status: registered, but must not receive traffic.
WAITING: Final = 2
#: Status bitmask matching every status (fetch ``status=3``).
ALL: Final = UP | WAITING

#: The appid under which registry nodes register themselves (spec §6.2).
INFRA_APPID: Final = "infra.discovery"


class Status(enum.IntFlag):
    """Instance status (spec §2.2): ``UP`` receives traffic, ``WAITING`` is registered but must not.

    The fetch and poll ``status`` filter is a bitmask of these; ``ALL`` (3) matches both. Members are
    ``int``s, so they go wherever the protocol takes a status (``Instance.status`` holds the plain int).
    """

    UP = UP
    WAITING = WAITING
    ALL = ALL


@dataclass(slots=True, kw_only=True)
class Instance:
    """One registered service instance, field order as the server emits it (spec §2.2).

    ``metadata`` is ``None`` when the instance was registered without a metadata object; the
    fetch and poll answers show it as ``{}``, ``fetch/all`` as ``null`` (as the Go server does).
    Instances handed out by discoverd are copies: mutating one never changes a registry.
    """

    region: str = ""
    zone: str
    env: str
    appid: str
    hostname: str
    addrs: list[str] = field(default_factory=list)
    version: str = ""
    metadata: dict[str, str] | None = None
    status: int = UP
    reg_timestamp: int = 0
    up_timestamp: int = 0
    renew_timestamp: int = 0
    dirty_timestamp: int = 0
    latest_timestamp: int = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        """``(appid, env, zone, hostname)``: the identity of the instance."""
        return (self.appid, self.env, self.zone, self.hostname)

    def copy(self) -> Instance:
        """A copy that shares nothing mutable with this instance."""
        return Instance(
            region=self.region,
            zone=self.zone,
            env=self.env,
            appid=self.appid,
            hostname=self.hostname,
            addrs=list(self.addrs),
            version=self.version,
            metadata=None if self.metadata is None else dict(self.metadata),
            status=self.status,
            reg_timestamp=self.reg_timestamp,
            up_timestamp=self.up_timestamp,
            renew_timestamp=self.renew_timestamp,
            dirty_timestamp=self.dirty_timestamp,
            latest_timestamp=self.latest_timestamp,
        )

    def to_wire(self, *, null_metadata: bool = False) -> dict[str, Any]:
        """The JSON object of the protocol, in the server's field order.

        ``null_metadata`` keeps ``None`` metadata as ``null`` (``fetch/all``); otherwise it is ``{}``.
        """
        meta: dict[str, str] | None = self.metadata
        if meta is None and not null_metadata:
            meta = {}
        return {
            "region": self.region,
            "zone": self.zone,
            "env": self.env,
            "appid": self.appid,
            "hostname": self.hostname,
            "addrs": self.addrs,
            "version": self.version,
            "metadata": meta,
            "status": self.status,
            "reg_timestamp": self.reg_timestamp,
            "up_timestamp": self.up_timestamp,
            "renew_timestamp": self.renew_timestamp,
            "dirty_timestamp": self.dirty_timestamp,
            "latest_timestamp": self.latest_timestamp,
        }

    @classmethod
    def from_wire(cls, obj: object) -> Instance:
        """Decode the protocol's instance object; raises :class:`BadRequest` on a malformed one.

        Accepts the variants real servers send: ``metadata`` absent or ``null``, missing timestamps.
        """
        if not isinstance(obj, dict):
            raise BadRequest(f"instance: expected an object, got {type(obj).__name__}")
        strs: dict[str, Any] = {k: _str_field(obj, k) for k in ("region", "zone", "env", "appid", "hostname")}
        addrs = obj.get("addrs") or []
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise BadRequest("instance: addrs must be an array of strings")
        meta = obj.get("metadata")
        if meta is not None and not (
            isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
        ):
            raise BadRequest("instance: metadata must be an object of strings")
        ints: dict[str, Any] = {
            k: _int_field(obj, k)
            for k in (
                "status",
                "reg_timestamp",
                "up_timestamp",
                "renew_timestamp",
                "dirty_timestamp",
                "latest_timestamp",
            )
        }
        return cls(
            addrs=list(addrs),
            version=_str_field(obj, "version"),
            metadata=None if meta is None else dict(meta),
            **strs,
            **ints,
        )


def _str_field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"instance: {name} must be a string")
    return value


def _int_field(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"instance: {name} must be an integer")
    return value


class Action(enum.StrEnum):
    """What happened to an instance, in a watch :class:`Event`."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a registry watch: ``action`` applied to ``instance`` (a copy)."""

    action: Action
    instance: Instance


def diff_instances(old: dict[str, Instance], new: dict[str, Instance]) -> list[Event]:
    """The events that turn ``old`` into ``new`` (both keyed by a per-instance id, e.g. hostname).

    An instance whose content differs (ignoring every timestamp: a re-register with the same
    content is no change) is an ``update``.
    """
    events = [Event(Action.DELETE, ins) for key, ins in old.items() if key not in new]
    for key, ins in new.items():
        before = old.get(key)
        if before is None:
            events.append(Event(Action.CREATE, ins))
        elif _content(before) != _content(ins):
            events.append(Event(Action.UPDATE, ins))
    return events


def _content(ins: Instance) -> tuple[object, ...]:
    return (
        ins.region,
        ins.zone,
        ins.env,
        ins.addrs,
        ins.version,
        ins.metadata or {},
        ins.status,
    )
