"""Access tokens and the peer secret of a node.

Tokens come from ``config.tokens`` and the lines of ``config.tokens_file`` (``#`` comments and blank
lines skipped), each a spec ``TOKEN[:ROLE[:APPID,APPID…]]``:

* ``admin`` (the default role) — everything, on any appid, including operator actions;
* ``write`` — register, renew, cancel and set, limited to the listed appids when some are given
  ("a service may only register itself"); implies ``read``;
* ``read`` — reads only.

Appid lists are accepted on ``write`` tokens only (a list on ``admin`` or ``read`` would suggest a
restriction that does not exist: :class:`~discoverd.errors.ConfigError`).

When at least one token or a peer secret is configured, :func:`gate_for` returns a :class:`Gate`, which
the request pipeline's auth stage (``server/pipeline.py``) asks before every route that is not
public (the dashboard's page and files and ``/health`` are), and which decides by path:

==========================================================  ==================================
``/discovery/register``, ``renew``, ``cancel``, ``set``       ``write`` covering the form's appid
                                                            (or ``admin``)
``/dashboard/admin…``                                       ``admin``
every other path (``fetch``, ``fetchs``, ``fetch/all``,       any token, only when
``poll``, ``polls``, ``nodes``, ``/dashboard/…``)            ``protect_reads``; else open
==========================================================  ==================================

The token is read from ``Authorization: Bearer TOKEN``, else from a ``token`` form or query
parameter (for clients that cannot set headers; the protocol binders never read that key).

Peers: a write with ``replication=true`` (own zone) or ``from_zone=true`` (forwarded by another
zone's node) comes from a peer. With ``peer_secret`` set it must carry ``Authorization: Bearer
<peer_secret>`` (tokens are not accepted for it): such writes are what makes an ``infra.discovery``
registration count as a replication peer (``core/cluster.py``). Without a secret, a replicated write
needs an ``admin`` token and a ``from_zone`` write is checked like a client's. The secret is accepted
on nothing else but those writes and the start-up sync read ``/discovery/fetch/all`` — it never
stands in for a client's token.

Refusals keep the protocol envelope with HTTP 200 and ``Kratos-Status-Code``: **-401**
``unauthorized: …`` (no token, unknown token, wrong peer secret) and **-403** ``forbidden: …`` (a
valid token without the role or appid scope needed).

Cost per request: a dict lookup for an open read; for a checked request one keyed BLAKE2b of the
presented token, a dict lookup on the digest and one constant-time comparison (``hmac``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from discoverd.config import ServerConfig
from discoverd.core.params import Form, parse_go_bool, parse_urlencoded
from discoverd.errors import BadRequest, ConfigError
from discoverd.server import answers, tls
from discoverd.server.http import HttpRequest

log = logging.getLogger("discoverd.auth")

UNAUTHORIZED: Final = -401
FORBIDDEN: Final = -403
WRITE_PATHS: Final = frozenset(
    {"/discovery/register", "/discovery/renew", "/discovery/cancel", "/discovery/set"}
)
SYNC_PATH: Final = "/discovery/fetch/all"
ADMIN_PREFIX: Final = "/dashboard/admin"


class Role(enum.IntEnum):
    """What a token may do; a higher role includes the lower ones."""

    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True, slots=True)
class Grant:
    """One configured token: its role and, for ``write``, the appids it may change (``None``: any)."""

    token: bytes
    role: Role
    appids: frozenset[str] | None = None

    def __repr__(self) -> str:  # never show the secret itself
        scope = "any" if self.appids is None else ",".join(sorted(self.appids))
        return f"Grant(role={self.role.name.lower()}, appids={scope})"

    def covers(self, appid: str) -> bool:
        return self.appids is None or appid in self.appids


def parse_spec(spec: str) -> Grant:
    """``TOKEN[:ROLE[:APPID,APPID…]]`` → :class:`Grant`.

    Raises :class:`ConfigError` for a malformed spec; the message never contains the token.
    """
    text = spec.strip()
    token, _, rest = text.partition(":")
    role_name, _, appid_text = rest.partition(":")
    if not token or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError("token spec: the token must be non-empty printable ASCII without spaces")
    try:
        role = Role[(role_name or "admin").strip().upper()]
    except KeyError:
        raise ConfigError(f"token spec: unknown role {role_name!r} (admin, write or read)") from None
    appids = frozenset(a.strip() for a in appid_text.split(",") if a.strip())
    if appids and role is not Role.WRITE:
        raise ConfigError(f"token spec: appid scopes apply to write tokens only, not {role.name.lower()}")
    if rest.count(":") > 1 or (appid_text and not appids):
        raise ConfigError("token spec: expected TOKEN[:ROLE[:APPID,APPID...]]")
    return Grant(token.encode(), role, appids or None)


def load_grants(config: ServerConfig) -> list[Grant]:
    """Every token of ``config.tokens`` and ``config.tokens_file``; raises :class:`ConfigError`."""
    specs = list(config.tokens)
    if config.tokens_file:
        try:
            text = Path(config.tokens_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"tokens_file {config.tokens_file}: {exc}") from None
        specs += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    grants: dict[bytes, Grant] = {}
    for spec in specs:
        grant = parse_spec(spec)
        if grant.token in grants:
            raise ConfigError("token spec: a token is listed twice")
        grants[grant.token] = grant
    if config.peer_secret and config.peer_secret.encode() in grants:
        raise ConfigError("the peer secret must not also be a client token")
    return list(grants.values())


def preflight(config: ServerConfig) -> None:
    """Raise :class:`ConfigError` now for any security setting the node would refuse at start: token
    specs, ``tokens_file``, TLS certificate, key and CA. Cheap; the node runs it before binding (the
    CLI may run it right after loading the config, to exit 2 with a one-line message)."""
    load_grants(config)
    tls.server_context(config)
    tls.client_context(config)


def _refusal(code: int, message: str) -> bytes:
    return answers.error(code, message)


class Gate:
    """The access check of a node with tokens or a peer secret. Immutable after construction;
    calls are cheap and side-effect free. Returns ``None`` to allow, else the refusal to send."""

    __slots__ = ("_grants", "_key", "_peer", "protect_reads")

    def __init__(
        self, grants: Iterable[Grant], *, protect_reads: bool = False, peer_secret: str = ""
    ) -> None:
        self._key = os.urandom(16)
        self._grants = {self._digest(g.token): g for g in grants}
        self._peer = peer_secret.encode()
        self.protect_reads = protect_reads and bool(self._grants)
        """Reads need a token (only meaningful when there are tokens)."""

    def __repr__(self) -> str:
        return (
            f"<Gate tokens={len(self._grants)} protect_reads={self.protect_reads} "
            f"peer_secret={'set' if self._peer else 'none'}>"
        )

    def _digest(self, token: bytes) -> bytes:
        # keyed: the dict's own comparisons see digests an attacker cannot steer byte by byte
        return hashlib.blake2b(token, key=self._key, digest_size=16).digest()

    def lookup(self, token: bytes) -> Grant | None:
        """The grant of ``token``, or ``None``; constant-time in the token's content."""
        if not token:
            return None
        grant = self._grants.get(self._digest(token))
        if grant is None or not hmac.compare_digest(grant.token, token):
            return None
        return grant

    def _is_peer(self, token: bytes) -> bool:
        return bool(self._peer) and bool(token) and hmac.compare_digest(token, self._peer)

    def __call__(self, req: HttpRequest, form: Form, path: str) -> bytes | None:
        if path in WRITE_PATHS:
            return self._write(req, form)
        need = Role.ADMIN if path.startswith(ADMIN_PREFIX) else Role.READ
        if (need is Role.READ and not self.protect_reads) or not self._grants:
            return None  # open reads; or only a peer secret is configured: clients are not checked
        token = presented_token(req, form)
        if path == SYNC_PATH and self._is_peer(token):
            return None
        return self._check(token, need, None)

    def _write(self, req: HttpRequest, form: Form) -> bytes | None:
        token = presented_token(req, form)
        replicated = parse_go_bool(form.first("replication"))
        from_zone = parse_go_bool(form.first("from_zone"))
        if (replicated or from_zone) and self._is_peer(token):
            return None
        if self._peer and replicated:
            return _refusal(UNAUTHORIZED, "unauthorized: replicated writes need the peer secret")
        if self._peer and from_zone:
            return _refusal(UNAUTHORIZED, "unauthorized: cross-zone writes (from_zone) need the peer secret")
        if replicated:
            return self._check(token, Role.ADMIN, None)
        if not self._grants:
            return None  # only a peer secret is configured: client writes stay open
        return self._check(token, Role.WRITE, form.first("appid"))

    def _check(self, token: bytes, need: Role, appid: str | None) -> bytes | None:
        if not token:
            return _refusal(UNAUTHORIZED, "unauthorized: a token is required (Authorization: Bearer)")
        grant = self.lookup(token)
        if grant is None:
            return _refusal(UNAUTHORIZED, "unauthorized: unknown token")
        if grant.role < need:
            return _refusal(
                FORBIDDEN,
                f"forbidden: a {grant.role.name.lower()} token cannot do this (needs {need.name.lower()})",
            )
        if appid is not None and grant.role is Role.WRITE and not grant.covers(appid):
            return _refusal(FORBIDDEN, f"forbidden: the token does not cover appid {appid!r}")
        return None


def presented_token(req: HttpRequest, form: Form) -> bytes:
    """The request's token: ``Authorization: Bearer``, else a ``token`` form/query parameter, else ``b""``."""
    raw = req.headers.get(b"authorization")
    if raw is not None and raw[:7].lower() == b"bearer ":
        return raw[7:].strip()
    value = form.first("token")
    if value:
        return value.encode()
    if b"token=" in req.query:  # a form left unparsed (fetch/all, nodes, dashboard routes)
        values: dict[str, list[str]] = {}
        try:
            parse_urlencoded(req.query, values)
        except BadRequest:
            return b""
        found = values.get("token")
        if found and found[0]:
            return found[0].encode()
    return b""


def gate_for(config: ServerConfig) -> Gate | None:
    """The gate for ``config``: ``None`` when it has no token and no peer secret (authentication off).

    Raises :class:`ConfigError` for a bad token spec or an unreadable ``tokens_file``. Logs what is
    on (run once by the node at assembly).
    """
    grants = load_grants(config)
    if config.protect_reads and not grants:
        log.warning("protect_reads has no effect without tokens: reads stay open")
    if not grants and not config.peer_secret:
        return None
    gate = Gate(grants, protect_reads=config.protect_reads, peer_secret=config.peer_secret)
    roles = {r.name.lower(): sum(g.role is r for g in grants) for r in Role}
    log.info(
        "authentication on: %s token(s) %s, reads %s, peer secret %s",
        len(grants),
        roles,
        "protected" if gate.protect_reads else "open",
        "required on peer writes" if config.peer_secret else "not set",
    )
    return gate


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal or ``localhost``) only accepts local connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or "" / "0.0.0.0" / "::": reachable from elsewhere


def exposure_warnings(host: str, config: ServerConfig) -> list[str]:
    """What to warn about when a node binds ``host`` with ``config`` (logged at start by the node)."""
    if is_loopback(host):
        return []
    if not config.tokens and not config.tokens_file:
        return [
            f"listening on non-loopback address {host!r} WITHOUT access tokens: anyone who can reach this "
            "port can register, cancel and change instances. Configure --token/--tokens-file, or bind "
            "to 127.0.0.1"
        ]
    if not config.tls_cert:
        return [
            f"listening on non-loopback address {host!r} over plain HTTP: tokens cross the network in "
            "clear text. Configure --tls-cert/--tls-key"
        ]
    return []
