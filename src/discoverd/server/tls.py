"""TLS for a node: the HTTPS listener's context and the context used to reach peers.

TLS is on when ``config.tls_cert`` (and ``tls_key``) are set. Then the node serves HTTPS only, and
contacts its peers (replication, start-up sync) over HTTPS, verifying their certificates against
``config.tls_ca`` (a PEM bundle) or, without one, the system's CAs. Peers are addressed by their
``host:port``, so their certificates must name that host (an IP subjectAltName for an IP address).
Both sides require TLS 1.2 or newer.
"""

from __future__ import annotations

import ssl

from discoverd.config import ServerConfig
from discoverd.errors import ConfigError


def enabled(config: ServerConfig) -> bool:
    """Whether the node serves HTTPS (and reaches its peers over HTTPS)."""
    return bool(config.tls_cert)


def peer_scheme(config: ServerConfig) -> str:
    """``"https"`` when TLS is on, else ``"http"``."""
    return "https" if enabled(config) else "http"


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The listener's context (TLS ≥ 1.2, HTTP/1.1 by ALPN), or ``None`` when TLS is off.

    Raises :class:`ConfigError` when the certificate or key cannot be loaded.
    """
    if not enabled(config):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert/tls_key ({config.tls_cert}, {config.tls_key}): {exc}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The context for reaching peers (verifying with ``tls_ca`` or the system CAs, host names
    checked, TLS ≥ 1.2), or ``None`` when TLS is off. Raises :class:`ConfigError` for a bad CA file."""
    if not enabled(config):
        return None
    try:
        ctx = ssl.create_default_context(cafile=config.tls_ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_ca {config.tls_ca}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
