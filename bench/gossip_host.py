"""The memberlist nodes of one process of the gossip benchmark, and the measurements made on them.

:class:`Host` runs some of the cluster's nodes in this process; its methods (:data:`METHODS`) are what the
controller calls, here or over a worker's stdin/stdout (``bench/gossip_workers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench import harness
from discoverd.backends.gossip.node import MemberlistNode
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.messages import NodeState

PRESETS: dict[str, Callable[..., GossipConfig]] = {
    "local": GossipConfig.local,
    "lan": GossipConfig.lan,
    "wan": GossipConfig.wan,
}
#: The intervals ``--scale`` divides (tcp_timeout is a timeout, not an interval: kept).
SCALED = (
    "probe_interval",
    "probe_timeout",
    "gossip_interval",
    "push_pull_interval",
    "gossip_to_the_dead_time",
)
LAG_PERIOD = 0.010


def log(msg: str) -> None:
    """One progress line on stderr, tagged ``gossip``."""
    harness.log(msg, "gossip")


def make_config(preset: str, scale: float, name: str = "", push_pull: float | None = None) -> GossipConfig:
    """The preset with every interval of :data:`SCALED` divided by ``scale``; ``push_pull`` (seconds, not
    scaled) overrides the push/pull interval (0 = none, as go-micro)."""
    base = PRESETS[preset]()
    changes = {f: getattr(base, f) / scale for f in SCALED}
    if push_pull is not None:
        changes["push_pull_interval"] = push_pull
    return base.replace(name=name, **changes)


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, nearest rank (``ceil(q/100 × n)``); NaN if empty."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


class DeathWatch:
    """What the ``live`` nodes' tables say of ``victim``: per node, when it was first SUSPECT (and the
    table's size then) and when first DEAD (or gone)."""

    def __init__(self, victim: str, live: list[MemberlistNode]) -> None:
        self.victim = victim
        self.live = live
        self.suspect: dict[str, float] = {}
        self.dead: dict[str, float] = {}
        self.table_n: dict[str, int] = {}

    def look(self, now: float) -> None:
        """Read every table once, stamping new observations with ``now``."""
        for node in self.live:
            m = node.table.nodes.get(self.victim)
            if m is not None and m.state == NodeState.SUSPECT and node.name not in self.suspect:
                self.suspect[node.name] = now
                self.table_n[node.name] = len(node.table.nodes)
            if (m is None or m.state == NodeState.DEAD) and node.name not in self.dead:
                self.dead[node.name] = now


# -- the nodes of one process ----------------------------------------------------------------------------


class Host:
    """Hosts some of the cluster's nodes in this process and measures them (methods are the RPC surface)."""

    def __init__(self, preset: str, scale: float, push_pull: float | None = None) -> None:
        self.preset = preset
        self.scale = scale
        self.push_pull = push_pull
        cfg = make_config(preset, scale)
        self.poll = max(0.001, min(0.005, cfg.probe_interval / 100))
        self.nodes: dict[str, MemberlistNode] = {}
        self.target = 0
        self.reached: dict[str, float] = {}
        self._all_reached = asyncio.Event()
        self.leaves: list[tuple[str, str, float]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._lags: list[float] = []
        self._lag_task: asyncio.Task[None] | None = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def live(self) -> list[MemberlistNode]:
        """The nodes of this process that are not shut down."""
        return [n for n in self.nodes.values() if not n.closed]

    async def _track(self, node: MemberlistNode) -> None:
        """Stamp ``node``'s leave events and when it first lists the target member count."""
        async for ev in node.events():
            now = time.monotonic()
            if ev.kind == "leave":
                self.leaves.append((node.name, ev.member.name, now))
            if node.name not in self.reached and node.num_members() >= self.target:
                self.reached[node.name] = now
                self._check_all()

    def _check_all(self) -> None:
        if all(n.name in self.reached for n in self.live()):
            self._all_reached.set()

    async def _lag_loop(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(LAG_PERIOD)
            self._lags.append(time.monotonic() - t - LAG_PERIOD)

    async def _lag_off(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None

    async def start(self, names: list[str], target: int) -> dict[str, str]:
        """Start nodes ``names``; returns name → ``host:port``."""
        self.target = target
        self._all_reached.clear()
        out: dict[str, str] = {}
        for name in names:
            node = await MemberlistNode(make_config(self.preset, self.scale, name, self.push_pull)).start()
            self.nodes[name] = node
            self._spawn(self._track(node))
            out[name] = f"{node.addr[0]}:{node.addr[1]}"
        return out

    async def join(self, pairs: list[list[str]]) -> dict[str, Any]:
        """``[[name, seed host:port], …]``: each node joins its seed, one after the other."""
        errors: list[str] = []
        first = time.monotonic()
        for name, seed in pairs:
            try:
                await self.nodes[name].join([seed])
            except Exception as e:
                errors.append(f"{name} → {seed}: {e}")
        return {"first": first, "done": time.monotonic(), "errors": errors}

    async def expect(self, n: int) -> None:
        """From now on, stamp each live node when it lists ``n`` members."""
        self.target = n
        self.reached = {}
        self._all_reached.clear()
        now = time.monotonic()
        for node in self.live():
            if node.num_members() >= n:
                self.reached[node.name] = now

    async def wait_members(self, timeout: float) -> dict[str, Any]:
        """Wait until every live node reached the expected member count (or ``timeout``)."""
        self._check_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_reached.wait(), timeout)
        live = self.live()
        return {
            "reached": {n.name: self.reached.get(n.name) for n in live},
            "members": {n.name: n.num_members() for n in live},
        }

    async def kill(self, name: str) -> float:
        """``shutdown()`` node ``name`` (no leave); returns the time just before the call."""
        t = time.monotonic()
        await self.nodes[name].shutdown()
        return t

    async def wait_dead(self, victim: str, timeout: float) -> dict[str, Any]:
        """Until every live node has ``victim`` DEAD: per node, when it was first seen SUSPECT and DEAD, and
        the survivor's table size when the suspicion started."""
        seen = DeathWatch(victim, self.live())
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            seen.look(now)
            if len(seen.dead) == len(seen.live) or now >= deadline:
                break
            await asyncio.sleep(self.poll)
        await asyncio.sleep(0)  # let the trackers stamp the last leave events
        for observer, member, t in self.leaves:
            if member == victim and observer in seen.dead:
                seen.dead[observer] = min(seen.dead[observer], t)
        return {
            "suspect": seen.suspect,
            "dead": seen.dead,
            "missing": [n.name for n in seen.live if n.name not in seen.dead],
            "table_n": seen.table_n,
        }

    async def snapshot(self) -> dict[str, Any]:
        """Counters of the live nodes (packets, push/pulls, bad/dropped, queued broadcasts, refutations,
        awareness, leave events, open suspicions) and this process's CPU time."""
        live = self.live()
        return {
            "cpu": time.process_time(),
            "packets": sum(n.stats["packets"] for n in live),
            "push_pulls": sum(n.stats["push_pulls"] for n in live),
            "bad": sum(n.stats["bad_packets"] + n.stats["bad_streams"] for n in live),
            "dropped": sum(n.stats["dropped"] for n in live),
            "queued": sum(len(n.queue) for n in live),
            "refutations": {n.name: n.table.local.incarnation - 1 for n in live},
            "awareness": max((n.health_score for n in live), default=0),
            "leaves": [list(x) for x in self.leaves],
            "suspects": sum(len(n.table.suspicions) for n in live),
            "nodes": len(live),
        }

    async def lag(self, on: bool) -> dict[str, float]:
        """The lag samples since the last call (then the monitor is switched ``on`` or off: when off, its task
        is gone, so it costs nothing during the idle window)."""
        await self._lag_off()
        lags, self._lags = self._lags, []
        if on:
            self._lag_task = asyncio.get_running_loop().create_task(self._lag_loop())
        return {
            "n": len(lags),
            "p50": pct(lags, 50),
            "p99": pct(lags, 99),
            "max": max(lags, default=math.nan),
        }

    async def stop(self) -> None:
        """Shut every node down and cancel the tracking tasks."""
        for node in list(self.nodes.values()):
            await node.shutdown()
        await self._lag_off()
        for t in list(self._tasks):
            t.cancel()


METHODS = ("start", "join", "expect", "wait_members", "kill", "wait_dead", "snapshot", "lag", "stop")


async def dispatch(host: Host, method: str, args: dict[str, Any]) -> Any:
    """Call ``host.method(**args)``; ValueError for a name outside :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    return await getattr(host, method)(**args)
