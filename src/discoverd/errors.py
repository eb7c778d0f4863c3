"""Errors raised by discoverd, and the wire codes of the bilibili/discovery protocol.

Every error discoverd raises derives from :class:`DiscoverdError`::

    DiscoverdError
    ├── ConfigError            bad configuration (flags, TOML, environment)
    ├── ProtocolError          a wire-level failure, carries the protocol ``code``
    │   ├── BadRequest         -400  malformed or invalid parameters
    │   ├── NotFound           -404  unknown app / zone / instance
    │   ├── Conflict           -409  a peer holds a newer copy
    │   ├── ServerError        -500  node in start-up protect, or internal failure
    │   └── Unavailable        -503  no node could be reached
    ├── NotModified            -304  long poll held until timeout (control flow, not a failure)
    ├── MissingExtra           an optional dependency is not installed (also an ``ImportError``)
    └── GossipError            a memberlist / go-micro gossip failure (join refused, key mismatch …)
        └── GossipDecodeError  a malformed, truncated, undecryptable or oversized gossip message
            └── GossipLabelError   a missing, different or malformed memberlist label header

The mapping between codes and classes lives in one table, :data:`CODE_TO_ERROR`, and is used at the
boundary only (decoding answers from a server, encoding answers of the server).
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
NOT_MODIFIED: Final = -304
BAD_REQUEST: Final = -400
NOT_FOUND: Final = -404
CONFLICT: Final = -409
SERVER_ERROR: Final = -500
UNAVAILABLE: Final = -503


class DiscoverdError(Exception):
    """Base class of every error raised by discoverd."""


class ConfigError(DiscoverdError):
    """The configuration (flags, TOML file, environment variables) is invalid."""


class ProtocolError(DiscoverdError):
    """A protocol-level failure with its wire ``code`` and ``message``."""

    code: int = SERVER_ERROR

    def __init__(self, message: str = "", *, code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message or str(self.code)
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class BadRequest(ProtocolError):
    """-400: a parameter is missing, malformed or invalid."""

    code = BAD_REQUEST


class NotFound(ProtocolError):
    """-404: the app, zone or instance is unknown."""

    code = NOT_FOUND


class Conflict(ProtocolError):
    """-409: a peer holds a newer copy of the instance."""

    code = CONFLICT


class ServerError(ProtocolError):
    """-500: the node refuses reads (start-up protect) or failed internally."""

    code = SERVER_ERROR


class Unavailable(ProtocolError):
    """-503: no registry node could be reached."""

    code = UNAVAILABLE


class NotModified(DiscoverdError):
    """-304: a long poll was held until its timeout and nothing changed."""

    code = NOT_MODIFIED


class MissingExtra(DiscoverdError, ImportError):
    """A feature needs an optional dependency that is not installed.

    The message names the package extra that installs it, e.g. ``pip install 'discoverd[redis]'``.
    """

    def __init__(self, library: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the {library!r} package, which is not installed: "
            f"pip install 'discoverd[{extra}]'"
        )
        self.library = library
        self.extra = extra


class GossipError(DiscoverdError):
    """A memberlist / go-micro gossip failure: no seed could be joined, a peer refused us, a bad key."""


class GossipDecodeError(GossipError):
    """A gossip packet or stream that cannot be decoded: malformed, truncated, failed CRC or decryption,
    oversized. The node drops it (and, on TCP, answers ``errMsg``); it never stops the node."""


class GossipLabelError(GossipDecodeError):
    """A packet or stream whose memberlist label header (memberlist ≥ 0.3.0) is malformed, missing, different
    from the configured label, or present although ``skip_inbound_label_check`` is set. The node drops it
    (a stream is closed without an ``errMsg``, as memberlist does)."""


CODE_TO_ERROR: Final[dict[int, type[ProtocolError]]] = {
    BAD_REQUEST: BadRequest,
    NOT_FOUND: NotFound,
    CONFLICT: Conflict,
    SERVER_ERROR: ServerError,
    UNAVAILABLE: Unavailable,
}


def error_for_code(code: int, message: str = "") -> ProtocolError:
    """The exception for a non-zero wire ``code`` (unknown codes become a plain :class:`ProtocolError`)."""
    cls = CODE_TO_ERROR.get(code)
    if cls is None:
        return ProtocolError(message, code=code)
    return cls(message)
