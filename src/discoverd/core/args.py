"""The argument structs of the Go server's endpoints (``model/param.go``), for :func:`~.params.bind`.

Field order and Go names matter: they appear in validation messages such as
``Key: 'ArgRegister.Zone' Error:Field validation for 'Zone' failed on the 'required' tag``.
"""

from __future__ import annotations

from typing import Final

from discoverd.core.params import ArgSpec, Field

_ZONE_REQ = Field("zone", "Zone", rule="required")
_ENV_REQ = Field("env", "Env", rule="required")
_APPID_REQ = Field("appid", "AppID", rule="required")
_HOST_REQ = Field("hostname", "Hostname", rule="required")
_REPLICATION = Field("replication", "Replication", "bool")
_FROM_ZONE = Field("from_zone", "FromZone", "bool")
_LATEST = Field("latest_timestamp", "LatestTimestamp", "int")
_DIRTY = Field("dirty_timestamp", "DirtyTimestamp", "int")

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
)

RENEW: Final = ArgSpec(
    "ArgRenew", (_ZONE_REQ, _ENV_REQ, _APPID_REQ, _HOST_REQ, _REPLICATION, _DIRTY, _FROM_ZONE)
)

CANCEL: Final = ArgSpec(
    "ArgCancel", (_ZONE_REQ, _ENV_REQ, _APPID_REQ, _HOST_REQ, _FROM_ZONE, _REPLICATION, _LATEST)
)

FETCH: Final = ArgSpec(
    "ArgFetch",
    (Field("zone", "Zone"), _ENV_REQ, _APPID_REQ, Field("status", "Status", "uint", "required")),
)

FETCHS: Final = ArgSpec(
    "ArgFetchs",
    (
        Field("zone", "Zone"),
        _ENV_REQ,
        Field("appid", "AppID", "strs", "gt"),
        Field("status", "Status", "uint", "required"),
    ),
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
)
