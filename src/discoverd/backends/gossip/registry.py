"""``gossip://`` — the go-micro gossip registry over a memberlist node: no registry server at all.

Every registry object is a memberlist node; each registration travels as a go-micro ``Update`` user broadcast
(protobuf, ``data`` = the service JSON with Go's field names; spec §2.5) and a joining node receives the whole
registry in the join push/pull (``{"<name>": [Service, …]}``). Go services running go-micro's gossip registry
(v1.x / go-plugins v2) on the same cluster see our registrations and we see theirs.

URL: ``gossip://host:port?join=h:p,h:p&secret=KEY&preset=local|lan|wan&name=&advertise=host:port&protocol=4
&pushpull=SECONDS&compress=1&ttl=SECONDS&label=`` (port 0 = OS-assigned). ``secret`` may be repeated (first =
primary); each is 16, 24 or 32 bytes of text, or ``base64:…`` of such a key. There is **no default secret**
(go-micro's public ``micro-gossip-key`` is not assumed): without ``secret`` traffic is not encrypted.
``label`` (at most 255 bytes, empty by default) is a memberlist ≥ 0.3.0 cluster label: every packet and stream
carries it and traffic without it is dropped; leave it unset next to memberlist 0.2.x peers, which have none.

Deliberate differences from go-micro, all wire-compatible (see ``core/gossip/micro*.py`` for the state rules):

* updates we receive for the first time are **re-broadcast** (go-micro never re-gossips, so an update reached
  only the few peers its originator happened to pick); duplicates are recognised by digest and **ignored**
  (go-micro applies every copy, so a late retransmission of a create can resurrect a node just deleted);
* our broadcast retransmit limit uses the **cluster size**, not the number of seed addresses;
* ``Merge`` keeps other versions of a service (go-micro's drops versions stored after the matching one);
* expiry is tracked per node, so a re-registration with new metadata is not deleted by the old record;
  entries learned at join expire unless re-announced; a far-future ``expires`` is clamped;
* a join is retried every second while no other member is alive (seed restarts, go-micro's ``ConnectRetry``);
* ``aclose()`` broadcasts a delete for our own registrations before leaving (go-micro lets them expire).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from discoverd.backends.base import Registry, RegistryClosed, Watcher
from discoverd.backends.gossip.micro_delegate import RETRANSMIT_MULT, MicroDelegate
from discoverd.backends.gossip.node import MemberlistNode
from discoverd.backends.watch import WatchHub
from discoverd.config import split_hostport
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.micro import (
    ACTION_CREATE,
    ACTION_DELETE,
    Update,
    instance_to_service,
    service_to_json,
)
from discoverd.errors import ConfigError, GossipError
from discoverd.model import Instance

#: Registration lifetime when ``register`` is given no ttl; it is re-announced every third of it.
DEFAULT_TTL: Final = 90.0
#: go-micro's expiry tick.
EXPIRY_TICK: Final = 1.0


def parse_gossip_url(url: str) -> tuple[GossipConfig, list[str], float]:
    """``gossip://…`` → (node config, seeds, default ttl). Raises :class:`ConfigError`."""
    parts = urlsplit(url)
    if parts.scheme != "gossip":
        raise ConfigError(f"{url!r}: not a gossip:// URL")
    try:
        host, port = parts.hostname or "127.0.0.1", parts.port or 0
    except ValueError as e:
        raise ConfigError(f"{url!r}: {e}") from None
    q = parse_qsl(parts.query)
    known = {
        "join",
        "secret",
        "preset",
        "name",
        "advertise",
        "protocol",
        "pushpull",
        "compress",
        "ttl",
        "label",
    }
    if unknown := sorted({k for k, _ in q} - known):
        raise ConfigError(f"{url!r}: unknown parameter(s) {', '.join(unknown)}")
    opts = dict(q)
    seeds = [s for k, v in q if k == "join" for s in v.split(",") if s]
    keys = tuple(_key(v) for k, v in q if k == "secret")
    overrides: dict[str, object] = {
        "bind_host": host,
        "bind_port": port,
        "keys": keys,
        "name": opts.get("name", ""),
        "protocol_version": _int(opts.get("protocol", "4"), "protocol"),
        "push_pull_interval": _num(opts.get("pushpull", "30"), "pushpull"),
        "enable_compression": opts.get("compress", "1") not in ("0", "false", "no"),
        "label": opts.get("label", ""),
    }
    if adv := opts.get("advertise"):
        overrides["advertise_host"], overrides["advertise_port"] = split_hostport(adv)
    preset = opts.get("preset", "local")
    makers = {"local": GossipConfig.local, "lan": GossipConfig.lan, "wan": GossipConfig.wan}
    if preset not in makers:
        raise ConfigError(f"{url!r}: preset must be local, lan or wan")
    return makers[preset](**overrides), seeds, _num(opts.get("ttl", str(DEFAULT_TTL)), "ttl")


def _key(text: str) -> bytes:
    if text.startswith("base64:"):
        try:
            key = base64.b64decode(text[7:], validate=True)
        except binascii.Error:
            raise ConfigError("secret: bad base64") from None
    else:
        key = text.encode()
    if len(key) not in (16, 24, 32):
        raise ConfigError(f"secret: a key must be 16, 24 or 32 bytes, got {len(key)}")
    return key


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{what}: expected an integer, got {text!r}") from None


def _num(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what}: expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses NaN
        raise ConfigError(f"{what}: must be >= 0")
    return value


class GossipRegistry(Registry):
    """A go-micro gossip registry participant (see the module docstring). Starts on first use."""

    def __init__(self, url: str = "gossip://127.0.0.1:0", *, watch_queue: int = 1000) -> None:
        super().__init__()
        self.url = url
        self.config, self.seeds, self.default_ttl = parse_gossip_url(url)
        self._hub = WatchHub(watch_queue)
        #: The go-micro side: registry state and update queue (the node's delegate).
        self.micro = MicroDelegate(self._hub, lambda: self.node.num_members())  # noqa: PLW0108 (node: below)
        self.node = MemberlistNode(self.config, self.micro)
        self._own: dict[tuple[str, str], tuple[Instance, float | None]] = {}
        self._started: asyncio.Task[None] | None = None
        self._loops: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<GossipRegistry {self.node.name!r} seeds={self.seeds} own={len(self._own)}>"

    async def start(self) -> None:
        """Bind and join (idempotent; every method calls it). Raises :class:`GossipError` if binding fails;
        an unreachable seed is retried in the background."""
        if self._closed:
            raise RegistryClosed("gossip registry is closed")
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        await self.node.start()
        if self.seeds:
            with contextlib.suppress(GossipError):
                await self.node.join(self.seeds)
        self._loops = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._expiry_loop())
            tg.create_task(self._refresh_loop())
            if self.seeds:
                tg.create_task(self._rejoin_loop())

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK)
            self.micro.expire()

    async def _refresh_loop(self) -> None:
        """Re-announce registrations made without a ttl every third of the default ttl."""
        while True:
            await asyncio.sleep(self.default_ttl / 3)
            for ins, ttl in list(self._own.values()):
                if ttl is None:
                    self._announce(ins, self.default_ttl)

    async def _rejoin_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.node.num_members() <= 1:
                with contextlib.suppress(GossipError):
                    await self.node.join(self.seeds)

    # -- updates ------------------------------------------------------------------------------------------

    def _announce(self, instance: Instance, ttl: float) -> None:
        data = service_to_json(instance_to_service(instance))
        expires = time.time_ns() + int(ttl * 1e9)
        self.micro.send(Update(expires=expires, action=ACTION_CREATE, data=data))

    # -- Registry -----------------------------------------------------------------------------------------

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        await self.start()
        self._own[(instance.appid, instance.hostname)] = (instance.copy(), ttl)
        self._announce(instance, ttl if ttl is not None else self.default_ttl)

    async def deregister(self, instance: Instance) -> None:
        await self.start()
        own = self._own.pop((instance.appid, instance.hostname), None)
        target = own[0] if own is not None else instance
        data = service_to_json(instance_to_service(target))
        self.micro.send(Update(action=ACTION_DELETE, data=data))

    async def get_service(self, appid: str) -> list[Instance]:
        await self.start()
        return self.micro.state.instances(appid)

    async def list_services(self) -> list[str]:
        await self.start()
        return self.micro.state.names()  # sorted, and only names that still have a node

    def watch(self, appid: str | None = None) -> Watcher:
        if self._closed:
            raise RegistryClosed("gossip registry is closed")
        return self._hub.watch(appid)

    async def aclose(self) -> None:
        """Close the callers, deregister our own instances (broadcast), leave the cluster, stop.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.close_callers()
        self._hub.close()  # watchers end now; our own deletes below are for the rest of the cluster
        if self._started is not None and self._started.done() and not self._started.exception():
            for ins, _ttl in list(self._own.values()):
                data = service_to_json(instance_to_service(ins))
                self.micro.send(Update(action=ACTION_DELETE, data=data))
            for _ in range(RETRANSMIT_MULT):  # push the deletes out now: leave() gossips membership first
                self.node.gossip()
            with contextlib.suppress(GossipError):
                await self.node.leave(2 * self.config.gossip_interval + 0.5)
        if self._loops is not None:
            self._loops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loops
        if self._started is not None and not self._started.done():
            self._started.cancel()
            with contextlib.suppress(asyncio.CancelledError, GossipError, OSError):
                await self._started
        await self.node.shutdown()
        self._hub.close()
