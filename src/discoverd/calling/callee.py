"""What a call to an app is made of: per-callee settings, the result, the route, relayed headers.

The data types of the load-balancing caller (:mod:`discoverd.calling.caller`, which re-exports
them): :class:`CalleeConfig` (how to call one app), :class:`CallResult`, :class:`CallFailed`,
:class:`CallRoute` (what a route hook may rewrite) and :func:`relay_headers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from discoverd import jsoncodec
from discoverd.core.balancing import NoInstance, instance_key
from discoverd.deprecation import Moved, Target
from discoverd.errors import DiscoverdError
from discoverd.model import Instance

RELAYED_HEADERS = (
    "X-Real-IP",
    "X-Forwarded-For",
    "X-Client-ID",
    "X-Device-ID",
    "X-Client-App-Name",
    "X-Client-App-Version",
    "X-Session-ID",
    "X-Request-ID",
    "X-Host",
    "X-Scheme",
    "X-User-Agent",
)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})


class CallFailed(DiscoverdError):
    """Every attempt of a call failed; ``attempts`` lists ``(instance key, error text)``."""

    def __init__(self, message: str, attempts: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True, kw_only=True, slots=True)
class CalleeConfig:
    """How to call one app."""

    timeout: float = 10.0
    """Total deadline of a call, retries included (seconds)."""
    attempt_timeout: float | None = None
    """Deadline of one attempt (default: what is left of ``timeout``)."""
    token: str = ""
    """Sent as the ``Access-Token`` header when set."""
    https: bool = False
    """Call ``https://`` (verifying certificates with ``ssl``) instead of ``http://``."""
    tls_ca: str = ""
    """PEM CA bundle verifying this callee over HTTPS; empty: the caller's ``tls_ca``, else the system's."""
    headers: Mapping[str, str] = field(default_factory=dict)
    max_attempts: int = 3
    retry_non_idempotent: bool = False
    """Retry POST/PATCH too (only safe when the callee deduplicates)."""
    color: str | None = None
    """Only instances with ``metadata["color"]`` equal to this."""
    cluster: str | None = None
    """Only instances with ``metadata["cluster"]`` equal to this."""


@dataclass(slots=True)
class CallResult:
    """A finished call: status, headers, body, and which instance answered."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    instance: Instance
    attempts: int

    def json(self) -> Any:
        """The body decoded as JSON (raises :class:`~discoverd.jsoncodec.DecodeError`)."""
        return jsoncodec.loads(self.body)

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")


@dataclass(slots=True)
class CallRoute:
    """What a route hook may rewrite."""

    appid: str
    method: str
    path: str
    body: Any = None


RouteHook = Callable[[CallRoute], CallRoute]


def relay_headers(incoming: Mapping[str, str] | Any | None) -> dict[str, str]:
    """The end-user context headers to forward from ``incoming`` (a request with ``headers`` or a mapping)."""
    if incoming is None:
        return {}
    headers = getattr(incoming, "headers", incoming)
    out = {}
    for name in RELAYED_HEADERS:
        value = headers.get(name)
        if value is None and hasattr(headers, "items"):
            value = next((v for k, v in headers.items() if str(k).lower() == name.lower()), None)
        if value is not None:
            out[name] = str(value)
    return out


def base_url(ins: Instance, https: bool) -> str:
    """The URL prefix of ``ins``: its first address of the wanted scheme, else ``scheme://host:port``
    of its first address. Raises :class:`NoInstance` when it has no usable address."""
    wanted = "https://" if https else "http://"
    for addr in ins.addrs:
        if addr.startswith(wanted):
            return addr.rstrip("/")
    for addr in ins.addrs:  # a bare host:port or another scheme's host:port
        hostport = addr.split("://", 1)[-1].split("/", 1)[0]
        if hostport:
            return wanted + hostport
    raise NoInstance(f"{instance_key(ins)} has no usable address")


__all__ = [
    "IDEMPOTENT",
    "RELAYED_HEADERS",
    "RETRY_STATUSES",
    "CallFailed",
    "CallResult",
    "CalleeConfig",
    "CallRoute",
    "RouteHook",
    "base_url",
    "relay_headers",
]


_MOVED = Moved(__name__, {"Route": Target(__name__, "CallRoute", "discoverd.calling.callee.CallRoute")})


def __getattr__(name: str) -> object:
    """``Route`` is the former name of :class:`CallRoute` (deprecated)."""
    return _MOVED.resolve(name)
