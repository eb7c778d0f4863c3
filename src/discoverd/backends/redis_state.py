"""The pure half of the Redis backend: the apigo/ssgo wire format and the node table (no I/O, no redis).

Wire format (``spec/redis-protocol.md``): an app is a hash ``<app>`` of ``<addr>`` → ``<weight>``; a field is
alive while the key ``<app>_<addr>`` exists; changes are announced on ``CH_<app>`` as ``"<addr> <weight>"``
(weight 0 = removed).

How a discoverd :class:`~discoverd.model.Instance` maps onto that narrower model:

* **addr** — ``host:port`` of the instance's first ``http``/``https``/``grpc`` address (scheme stripped; a
  missing port becomes 80 for http and 443 for https); without one, a bare ``host:port`` entry is used;
* **weight** — ``metadata["weight"]`` (a positive decimal integer), 100 when absent;
* everything else (region, zone, env, version, status, other metadata, the hostname) is **not** stored in
  Redis. Instances registered through the same registry object keep all their fields there (read your
  writes); an instance read from Redis comes back as :func:`remote_instance` builds it.

:class:`NodeTable` holds what one registry object knows: its own registrations, the followed apps' nodes
as read from Redis, and static nodes (``set_node``); :meth:`NodeTable.refresh` turns a change into the
watch events of the visible instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from discoverd.errors import BadRequest
from discoverd.model import Event, Instance, diff_instances

#: The weight of an instance without ``metadata["weight"]`` (the protocol's default).
DEFAULT_WEIGHT: Final = 100
#: Seconds the liveness key ``<app>_<addr>`` lives after each heartbeat (fixed by the protocol).
KEY_TTL: Final = 10
#: Schemes whose address becomes the Redis ``addr``, in no particular preference (the first listed wins).
ADDR_SCHEMES: Final = ("http", "https", "grpc")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def alive_key(app: str, addr: str) -> str:
    """The liveness key of ``addr`` in ``app``: ``<app>_<addr>``."""
    return f"{app}_{addr}"


def channel(app: str) -> str:
    """The announcement channel of ``app``: ``CH_<app>``."""
    return f"CH_{app}"


def app_of_channel(name: bytes) -> str | None:
    """``CH_<app>`` → ``app`` (``None`` for any other channel)."""
    text = name.decode("utf-8", "replace")
    return text[3:] if text.startswith("CH_") and len(text) > 3 else None


def encode_message(addr: str, weight: int) -> str:
    """The announcement ``"<addr> <weight>"`` (weight 0 = removed)."""
    return f"{addr} {weight}"


def parse_message(data: bytes) -> tuple[str, int] | None:
    """``b"<addr> <weight>"`` → ``(addr, weight)``; ``None`` when malformed (the caller ignores it)."""
    parts = data.decode("utf-8", "replace").split(" ")
    if len(parts) != 2 or not parts[0]:
        return None
    try:
        weight = int(parts[1])
    except ValueError:
        return None
    return parts[0], max(weight, 0)


def node_addr(instance: Instance) -> str:
    """The Redis ``addr`` of ``instance`` (see the module docstring); :class:`BadRequest` if it has none."""
    for raw in instance.addrs:
        parts = urlsplit(raw)
        if parts.scheme not in ADDR_SCHEMES or not parts.hostname:
            continue
        hostport = parts.netloc.rpartition("@")[2]
        try:
            port = parts.port
        except ValueError:
            continue
        if port is not None:
            return hostport
        if parts.scheme in _DEFAULT_PORTS:
            return f"{hostport}:{_DEFAULT_PORTS[parts.scheme]}"
    for raw in instance.addrs:
        if "://" not in raw and ":" in raw and " " not in raw:
            return raw
    raise BadRequest(f"redis: {instance.appid}/{instance.hostname} has no http/https/grpc host:port address")


def node_weight(instance: Instance) -> int:
    """``metadata["weight"]`` as a positive integer (100 when absent); :class:`BadRequest` otherwise."""
    raw = (instance.metadata or {}).get("weight")
    if raw is None:
        return DEFAULT_WEIGHT
    try:
        weight = int(raw)
    except ValueError:
        raise BadRequest(f"redis: weight must be a positive integer, got {raw!r}") from None
    if weight <= 0:
        raise BadRequest(f"redis: weight must be a positive integer, got {raw!r}")
    return weight


def remote_instance(app: str, addr: str, weight: int) -> Instance:
    """The instance a Redis node ``addr`` (``weight``) of ``app`` reads back as: hostname = addr,
    ``addrs = ["http://<addr>"]``, ``metadata = {"weight": "<weight>"}``, status UP, the rest empty."""
    return Instance(
        zone="", env="", appid=app, hostname=addr, addrs=[f"http://{addr}"], metadata={"weight": str(weight)}
    )


@dataclass(slots=True)
class LocalReg:
    """One registration made through this registry object: the full instance and its Redis form."""

    instance: Instance
    addr: str
    weight: int
    #: ``True`` until ``register`` attempted its own write (the heartbeat leaves it alone until then).
    pending: bool = True


class NodeTable:
    """What one registry object knows, per app; task-safe by construction (no awaits, single loop).

    * ``local`` — own registrations by hostname (they are what the heartbeat keeps alive);
    * ``remote`` — the followed apps' nodes as read from Redis (``addr → weight``);
    * ``static`` — nodes set by hand (``set_node``), never touched by Redis reads or the reaper.

    The visible instances of an app are the local ones, then one :func:`remote_instance` per static or
    remote addr that no local registration already covers (static weights win over remote ones).
    """

    def __init__(self) -> None:
        self.local: dict[str, dict[str, LocalReg]] = {}
        self.remote: dict[str, dict[str, int]] = {}
        self.static: dict[str, dict[str, int]] = {}
        self._visible: dict[str, dict[str, Instance]] = {}

    def put_local(self, reg: LocalReg) -> LocalReg | None:
        """Add or replace a local registration; returns the one it replaced."""
        hosts = self.local.setdefault(reg.instance.appid, {})
        old = hosts.get(reg.instance.hostname)
        hosts[reg.instance.hostname] = reg
        return old

    def pop_local(self, app: str, hostname: str) -> LocalReg | None:
        hosts = self.local.get(app)
        reg = None if hosts is None else hosts.pop(hostname, None)
        if hosts is not None and not hosts:
            del self.local[app]
        return reg

    def holds(self, app: str, addr: str) -> LocalReg | None:
        """The latest local registration of ``app`` on ``addr`` (``None`` when none holds it)."""
        found = None
        for reg in self.local.get(app, {}).values():
            if reg.addr == addr:
                found = reg
        return found

    def wanted(self, *, settled: bool = False) -> dict[tuple[str, str], int]:
        """``(app, addr) → weight`` of the local registrations (what the heartbeat maintains); with
        ``settled``, only those whose first write was attempted."""
        return {
            (app, r.addr): r.weight
            for app, hosts in self.local.items()
            for r in hosts.values()
            if not (settled and r.pending)
        }

    def set_remote(self, app: str, addr: str, weight: int) -> None:
        """Apply one announcement (weight <= 0 removes)."""
        nodes = self.remote.setdefault(app, {})
        if weight > 0:
            nodes[addr] = weight
        else:
            nodes.pop(addr, None)

    def set_static(self, app: str, addr: str, weight: int) -> None:
        nodes = self.static.setdefault(app, {})
        if weight > 0:
            nodes[addr] = weight
        else:
            nodes.pop(addr, None)
            if not nodes:
                del self.static[app]

    def visible(self, app: str) -> dict[str, Instance]:
        """The visible instances of ``app`` by hostname, as of the last :meth:`refresh` (not copies)."""
        return self._visible.get(app, {})

    def apps(self) -> list[str]:
        """Sorted apps with at least one visible instance."""
        return sorted(app for app, hosts in self._visible.items() if hosts)

    def refresh(self, app: str) -> list[Event]:
        """Recompute the visible instances of ``app``; returns the events of the difference."""
        local = self.local.get(app, {})
        covered = {r.addr for r in local.values()}
        new: dict[str, Instance] = {h: r.instance for h, r in local.items()}
        nodes = {**self.remote.get(app, {}), **self.static.get(app, {})}
        for addr, weight in nodes.items():
            if addr not in covered and addr not in new:
                new[addr] = remote_instance(app, addr, weight)
        old = self._visible.get(app, {})
        events = diff_instances(old, new)
        if new:
            self._visible[app] = new
        else:
            self._visible.pop(app, None)
        return events
