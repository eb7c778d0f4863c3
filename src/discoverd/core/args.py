"""The argument structs of the Go server's endpoints (``model/param.go``), bound by :func:`~.params.bind`.

Each endpoint's parameters bind to a frozen dataclass below; its :class:`~.params.ArgSpec` lists the
form keys in the dataclass's field order. Field order and Go names matter: they appear in
validation messages such as ``Key: 'ArgRegister.Zone' Error:Field validation for 'Zone' failed on
the 'required' tag``. Repeated fields are tuples; ``replication`` and ``from_zone`` are Go
``ParseBool`` flags, turned into a :class:`~.events.Source` by their ``source`` property.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from discoverd.core.events import SOURCE_BY_FLAGS, Source
from discoverd.core.params import ArgSpec, Field

_ZONE_REQ = Field("zone", "Zone", rule="required")
_ENV_REQ = Field("env", "Env", rule="required")
_APPID_REQ = Field("appid", "AppID", rule="required")
_HOST_REQ = Field("hostname", "Hostname", rule="required")
_REPLICATION = Field("replication", "Replication", "bool")
_FROM_ZONE = Field("from_zone", "FromZone", "bool")
_LATEST = Field("latest_timestamp", "LatestTimestamp", "int")
_DIRTY = Field("dirty_timestamp", "DirtyTimestamp", "int")


class _Write:
    """The ``source`` of a write, from its ``replication`` and ``from_zone`` flags."""

    __slots__ = ()
    replication: bool
    from_zone: bool

    @property
    def source(self) -> Source:
        return SOURCE_BY_FLAGS[self.replication][self.from_zone]


@dataclass(frozen=True, slots=True)
class RegisterArgs(_Write):
    region: str
    zone: str
    env: str
    appid: str
    hostname: str
    status: int
    addrs: tuple[str, ...]
    version: str
    metadata: str
    """The raw JSON text (decoded by :func:`~.params.register_metadata`)."""
    replication: bool
    latest_timestamp: int
    dirty_timestamp: int
    from_zone: bool


@dataclass(frozen=True, slots=True)
class RenewArgs(_Write):
    zone: str
    env: str
    appid: str
    hostname: str
    replication: bool
    dirty_timestamp: int
    from_zone: bool


@dataclass(frozen=True, slots=True)
class CancelArgs(_Write):
    zone: str
    env: str
    appid: str
    hostname: str
    from_zone: bool
    replication: bool
    latest_timestamp: int


@dataclass(frozen=True, slots=True)
class FetchArgs:
    zone: str
    env: str
    appid: str
    status: int


@dataclass(frozen=True, slots=True)
class FetchsArgs:
    zone: str
    env: str
    appid: tuple[str, ...]
    status: int


@dataclass(frozen=True, slots=True)
class PollsArgs:
    zone: str
    env: str
    appid: tuple[str, ...]
    hostname: str
    latest_timestamp: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SetArgs(_Write):
    region: str
    zone: str
    env: str
    appid: str
    hostname: tuple[str, ...]
    status: tuple[int, ...]
    metadata: tuple[str, ...]
    replication: bool
    from_zone: bool
    set_timestamp: int


REGISTER: Final = ArgSpec(
    "ArgRegister",
    (
        Field("region", "Region"),
        _ZONE_REQ,
        _ENV_REQ,
        _APPID_REQ,
        _HOST_REQ,
        Field("status", "Status", "uint", "required"),
        Field("addrs", "Addrs", "strs", "gt", split_commas=True),
        Field("version", "Version"),
        Field("metadata", "Metadata"),
        _REPLICATION,
        _LATEST,
        _DIRTY,
        _FROM_ZONE,
    ),
    RegisterArgs,
)

RENEW: Final = ArgSpec(
    "ArgRenew", (_ZONE_REQ, _ENV_REQ, _APPID_REQ, _HOST_REQ, _REPLICATION, _DIRTY, _FROM_ZONE), RenewArgs
)

CANCEL: Final = ArgSpec(
    "ArgCancel",
    (_ZONE_REQ, _ENV_REQ, _APPID_REQ, _HOST_REQ, _FROM_ZONE, _REPLICATION, _LATEST),
    CancelArgs,
)

FETCH: Final = ArgSpec(
    "ArgFetch",
    (Field("zone", "Zone"), _ENV_REQ, _APPID_REQ, Field("status", "Status", "uint", "required")),
    FetchArgs,
)

FETCHS: Final = ArgSpec(
    "ArgFetchs",
    (
        Field("zone", "Zone"),
        _ENV_REQ,
        Field("appid", "AppID", "strs", "gt"),
        Field("status", "Status", "uint", "required"),
    ),
    FetchsArgs,
)

POLLS: Final = ArgSpec(
    "ArgPolls",
    (
        Field("zone", "Zone"),
        _ENV_REQ,
        Field("appid", "AppID", "strs", "gt"),
        _HOST_REQ,
        Field("latest_timestamp", "LatestTimestamp", "ints"),
    ),
    PollsArgs,
)

SET: Final = ArgSpec(
    "ArgSet",
    (
        Field("region", "Region"),
        _ZONE_REQ,
        _ENV_REQ,
        _APPID_REQ,
        Field("hostname", "Hostname", "strs"),
        Field("status", "Status", "ints"),
        Field("metadata", "Metadata", "strs"),
        _REPLICATION,
        _FROM_ZONE,
        Field("set_timestamp", "SetTimestamp", "int"),
    ),
    SetArgs,
)

SPECS: Final = (REGISTER, RENEW, CANCEL, FETCH, FETCHS, POLLS, SET)
"""Every endpoint's spec (a test checks each spec's keys against its dataclass's fields)."""
