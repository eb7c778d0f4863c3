"""Client settings: one frozen dataclass, documented defaults (the Go client's, where it has one)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from discoverd.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientConfig:
    """Timings of an :class:`~discoverd.client.async_client.AsyncClient` (seconds)."""

    renew_interval: float = 30.0
    """Heartbeat period of registrations (the Go SDK's 30 s)."""
    poll_hold: float = 30.0
    """The server's long-poll hold; the client waits ``poll_hold + 10`` before giving up on a poll."""
    request_timeout: float = 10.0
    """Timeout of every non-poll request."""
    start_timeout: float = 10.0
    """How long ``start()`` tries the nodes before raising :class:`~discoverd.errors.Unavailable`."""
    backoff_base: float = 0.2
    """First retry delay after a node failure; doubles per consecutive failure (full jitter)."""
    backoff_cap: float = 10.0
    """Largest retry delay."""
    token: str = field(default="", repr=False)
    """Access token sent as ``Authorization: Bearer`` on every request to the registry (empty: none)."""
    https: bool = False
    """Reach the registry nodes over HTTPS (certificates verified with ``tls_ca`` or the system CAs)."""
    tls_ca: str = ""
    """PEM CA bundle that verifies the registry nodes (with ``https``) and, unless a callee names its own,
    the instances the caller reaches over HTTPS; empty: the system's CAs."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float | int) and not isinstance(value, bool) and value <= 0:
                raise ConfigError(f"{f.name} must be positive")
        if self.token and (not self.token.isascii() or not self.token.isprintable() or " " in self.token):
            raise ConfigError("token must be printable ASCII without spaces")

    def replace(self, **changes: Any) -> ClientConfig:
        return dataclasses.replace(self, **changes)
