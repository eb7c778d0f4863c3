"""Server configuration: a frozen dataclass, loaded from defaults < environment < TOML < flags.

Environment variables are the kratos ones (``ZONE``, ``REGION``, ``DEPLOY_ENV``, ``HOSTNAME``,
``DISCOVERY_NODES``); the TOML file (``--config``) uses the flag names with underscores
(``poll_hold = 30``); command-line flags win over both.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discoverd.errors import ConfigError

DEFAULT_ADDR = "127.0.0.1:7171"


def split_hostport(addr: str) -> tuple[str, int]:
    """``"host:port"`` (``[v6]:port`` too) → ``(host, port)``; raises :class:`ConfigError`."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"address {addr!r}: expected HOST:PORT")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"address {addr!r}: missing host")
    return host, int(port)


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    """Everything a registry node needs to know. Durations are seconds (floats allowed)."""

    addr: str = DEFAULT_ADDR
    """Listen address HOST:PORT (port 0 picks a free one)."""
    advertise: str = ""
    """Address peers and clients use; defaults to the bound listen address."""
    zone: str = "zone01"
    region: str = "region01"
    env: str = "dev"
    hostname: str = field(default_factory=socket.gethostname)
    nodes: tuple[str, ...] = ()
    """Own-zone registry nodes, itself included (matched against ``advertise``/``addr``)."""
    zones: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Registry nodes of the other zones: zone → ``host:port`` list."""
    replication_queue: int = 10_000
    """Bound of the per-peer replication queue (operations)."""
    sync_timeout: float = 5.0
    """How long start-up waits for peers' ``fetch/all``."""
    data_dir: str = ""
    """Directory of the registry snapshot; empty = no snapshots."""
    snapshot_interval: float = 5.0
    """Seconds between snapshots (only written when something changed)."""
    poll_hold: float = 30.0
    """How long a long poll is held before -304."""
    evict_after: float = 90.0
    """Renew age after which an instance is evicted."""
    evict_ceiling: float = 3600.0
    """Renew age after which an instance is evicted even while the guard protects."""
    evict_interval: float = 60.0
    """Eviction (and guard window) period."""
    recount_interval: float = 900.0
    """Period of the guard's expected-renews recount."""
    protect_threshold: float = 0.85
    """Share of expected renews below which eviction is suspended; also caps evictions per pass."""
    enable_protect: bool = False
    """Start in start-up protect: reads answer -500 until a peer sync or ``protect_duration``."""
    protect_duration: float = 60.0
    self_renew_interval: float = 30.0
    """Renew period of the node's own ``infra.discovery`` registration."""
    max_body: int = 1 << 20
    idle_timeout: float = 120.0
    log_level: str = "info"
    log_format: str = "text"
    """``text`` (one line per event) or ``json`` (one JSON object per line)."""
    access_log: bool = False
    """Log one line per answered request on ``discoverd.access`` (method, path, status, ms, client)."""
    tokens: tuple[str, ...] = ()
    """Access tokens, each ``TOKEN[:ROLE[:APPID,APPID…]]`` with ROLE ``admin`` (default), ``write`` or
    ``read``; empty = no authentication. See ``server/auth.py``."""
    tokens_file: str = ""
    """A file of token specs, one per line (``#`` comments), added to ``tokens`` (keeps secrets off argv)."""
    protect_reads: bool = False
    """With tokens: reads (fetch, poll, nodes, dashboard state) need a token of any role too."""
    peer_secret: str = ""
    """Shared secret peers present (``Authorization: Bearer``) on replicated writes; required from peers
    when set."""
    tls_cert: str = ""
    """PEM certificate chain: serve HTTPS (peers are then reached over HTTPS too)."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    tls_ca: str = ""
    """PEM CA bundle used to verify peers' certificates (default: the system's)."""
    max_conns_per_host: int = 512
    """Open connections of one client address beyond which its new connections are refused while
    the node is under connection pressure (``max_connections``); without pressure there is no
    per-address limit, so clients behind one NAT, proxy or sidecar are served."""
    max_connections: int = 0
    """Open client connections at once; 0 derives it from the file-descriptor limit (whose soft value
    is raised to the hard one at start), keeping descriptors for peers, snapshots and logs."""
    header_timeout: float = 10.0
    """Seconds a client has to send a request's line and headers once it started; then the
    connection is closed (slow-header clients)."""
    body_timeout: float = 30.0
    """Seconds a client has to send a request's body once the headers are in."""
    send_timeout: float = 30.0
    """Seconds a connection's unsent answers may stay above the write buffer's high-water mark (a
    client that does not read); then the connection is closed."""
    max_pipeline: int = 16
    """Requests read ahead of their answers on one connection; beyond it reading pauses."""
    max_peers_per_zone: int = 16
    """Replication peers taken from ``infra.discovery`` registrations in this zone (configured
    ``nodes`` always count); more are ignored."""
    max_peer_zones: int = 16
    """Other zones replicated to (configured ``zones`` always count), each with at most
    ``max_peers_per_zone`` nodes."""
    max_label_values: int = 64
    """Distinct env or zone values exported as metric labels; the rest are summed under ``other``."""
    xds: str = ""
    """``HOST:PORT`` of the xDS (gRPC ADS) server; empty = no xDS server (grpcio is not imported)."""
    max_polls: int = 100_000
    """Long polls held at once; beyond it a poll is answered -503 at once."""
    dashboard: bool = True
    """Serve the dashboard at ``/``."""

    def __post_init__(self) -> None:
        split_hostport(self.addr)
        if self.advertise:
            split_hostport(self.advertise)
        if self.xds:
            split_hostport(self.xds)
        for n in (*self.nodes, *(a for nodes in self.zones.values() for a in nodes)):
            split_hostport(n)
        if self.zone in self.zones:
            raise ConfigError(f"zones lists the node's own zone {self.zone!r}: use nodes for it")
        for name in ("poll_hold", "evict_after", "evict_interval", "self_renew_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not 0.0 < self.protect_threshold <= 1.0:
            raise ConfigError("protect_threshold must be in (0, 1]")
        for name in ("zone", "env", "hostname"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be text or json")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        for name in (
            "max_conns_per_host",
            "max_polls",
            "max_pipeline",
            "max_peers_per_zone",
            "max_peer_zones",
            "max_label_values",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.max_connections < 0:
            raise ConfigError("max_connections must be >= 0 (0: from the file-descriptor limit)")
        for name in ("header_timeout", "body_timeout", "send_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}
_ENV_VARS = {
    "ZONE": "zone",
    "REGION": "region",
    "DEPLOY_ENV": "env",
    "HOSTNAME": "hostname",
    "DISCOVERY_NODES": "nodes",
}


def _coerce(name: str, value: Any) -> Any:
    """Convert a TOML/env/flag value to the field's type; raises :class:`ConfigError`."""
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r}")
    default = getattr(ServerConfig(hostname="x"), name)
    try:
        if name == "nodes":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
        if name == "zones":
            return parse_zones(value)
        if name == "tokens":  # a TOML list, repeated --token flags, or one spec per line
            items = value.splitlines() if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in {"1", "t", "true", "yes", "on"}
            return bool(value)
        if isinstance(default, int) and not isinstance(default, bool):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: invalid value {value!r}") from exc


def parse_zones(value: Any) -> dict[str, tuple[str, ...]]:
    """``"z2=a:p,b:p;z3=c:p"`` or a TOML table ``{z2 = ["a:p", "b:p"]}`` → zone → nodes."""
    if isinstance(value, dict):
        out = {}
        for zone, nodes in value.items():
            if not isinstance(nodes, list | tuple) or not all(isinstance(n, str) for n in nodes):
                raise ConfigError(f"zones.{zone}: expected a list of HOST:PORT strings")
            out[str(zone)] = tuple(nodes)
        return out
    out = {}
    for part in str(value).split(";"):
        if not part.strip():
            continue
        zone, sep, nodes = part.partition("=")
        if not sep or not zone.strip():
            raise ConfigError(f"zones: expected zone=host:port,... in {part!r}")
        out[zone.strip()] = tuple(n.strip() for n in nodes.split(",") if n.strip())
    return out


def load_config(
    *,
    toml_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Build the config from the environment, an optional TOML file, then ``overrides`` (flags)."""
    values: dict[str, Any] = {}
    env = os.environ if environ is None else environ
    for var, name in _ENV_VARS.items():
        if env.get(var):
            values[name] = _coerce(name, env[var])
    if toml_path is not None:
        import tomllib  # only with a TOML file (the parser is not free to import)

        try:
            data = tomllib.loads(Path(toml_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config {toml_path}: {exc}") from exc
        for key, value in data.items():
            name = key.replace("-", "_")
            if isinstance(value, dict) and name != "zones":
                raise ConfigError(f"config {toml_path}: unknown table [{key}]")
            values[name] = _coerce(name, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value)
    return ServerConfig(**values)
