"""Gossip benchmark: 32 Python memberlist nodes on loopback, measured against memberlist's timing formulas.

    python bench/gossip_bench.py                          # Local preset, real time (about 45 s)
    python bench/gossip_bench.py --preset local --scale 5 # every interval ÷ 5 (about 10 s)
    python bench/gossip_bench.py --nodes 32 --repeat 5 --idle 10 --json /tmp/gossip.json
    python bench/gossip_bench.py --procs 2                # nodes spread over 2 worker processes
    python bench/gossip_bench.py --push-pull 0 --join-timeout 5   # no push/pull (go-micro): gossip alone

Every node is a :class:`discoverd.backends.gossip.node.MemberlistNode` with its real ``NetTransport`` (UDP +
TCP on one OS-assigned port of 127.0.0.1), all in one process and one event loop (uvloop when installed),
or with ``--procs K`` spread round-robin over K worker processes (this script with ``--worker``, a JSON-line
protocol on stdin/stdout; stopped by PID). Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock
for every process of the host).

The preset is ``GossipConfig.local()`` / ``lan()`` / ``wan()`` (spec §1.13) with ``--scale S`` dividing
every *interval* — probe interval and timeout, gossip interval, push/pull interval, gossip-to-the-dead time
— by S (the TCP timeout is kept). The ratios measured / formula are scale-free while the event loop keeps
up (at scale 5 one loop does not during the join burst: use scale 1 or ``--procs`` for join figures); the
CPU figures are not (a node does S times more work per second), so the script also prints CPU ÷ S.
``--push-pull SECONDS`` overrides the push/pull interval (0 = none, go-micro's setting).

1. **Join convergence.** All nodes are started; then node i (i ≥ 1) joins one random earlier node
   (``--join-first``: node 0), one ``join()`` after the other. Measured: from the first ``join()`` call until
   every node lists all N members (``num_members() == N``; stamped by a task reading each node's
   ``events()``). Formula, the epidemic spread estimate: ``gossip_interval × ⌈ln N / ln(gossip_nodes + 1)⌉``
   (each informed node tells ``gossip_nodes`` others per round). Gossip alone may stop short — a broadcast
   is sent only ``retransmit_mult × ⌈log10(N + 1)⌉`` times per node — and the periodic push/pull
   (``push_pull_interval``) is then the upper repair bound; both are printed.
2. **Failure detection.** With the cluster converged, one random node (never node 0) is ``shutdown()``
   without a leave; measured: until every other node has it DEAD (its ``leave`` event, or
   ``table.nodes[name].state``), with the first suspicion and the first death on the way. Formula (spec §1.8):
   ``(min, max) = suspicion_timeouts(suspicion_mult, suspicion_max_timeout_mult, n, probe_interval)`` with n =
   the survivors' table size, k = ``suspicion_k``; expected ≈ ``probe_interval + min`` (a failed probe takes
   one probe interval; k independent confirmations bring the timer to its floor ``min``); bounds: ``min``
   and ``probe_interval + max`` (awareness 0, no confirmation). Ratio = measured / (probe_interval + min).
   (Not in the formula: the wait for the first probe of the dead node — N − 1 round-robin probers reach it
   after ≈ one probe interval — so ratios of ≈ 1.15–1.2 are what memberlist itself gives.)
   The dead node is then replaced by a new one (joins node 0, which is also timed) and the measurement is
   repeated (``--repeat``, default 3); the median is reported.
3. **Idle cost.** The converged cluster, its broadcast queues empty, idles for ``--idle`` seconds (default
   10 / S, i.e. 10 s of protocol time). CPU = ``getrusage(RUSAGE_SELF)`` of this process (+ the workers'
   own CPU time with ``--procs``) over the window ÷ N → % of a core per node; packets per second per node =
   Σ Δ ``node.stats["packets"]`` (received datagrams) ÷ N ÷ seconds, next to ``2 / probe_interval`` (each
   node's own ping + ack, plus on average one ping from another node and its ack: it receives ≈ 2 per
   probe interval). The benchmark's own loop-lag monitor is paused meanwhile.

Health figures: refutations (Σ over nodes of own incarnation − 1: every false suspicion of a live node
costs one), ``leave`` events about nodes that were not shut down (false deaths), the largest awareness
score, and the event-loop lag (a 10 ms sleeper's overshoot) during each phase.

Output: a Markdown table on stdout (progress on stderr); ``--json PATH`` also writes every figure (``-`` =
stdout). Every node is shut down at the end; exit status 1 when the cluster did not converge or a node was
falsely declared dead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, cast

from discoverd.backends.gossip.node import MemberlistNode
from discoverd.core.gossip.broadcast import retransmit_limit
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.messages import NodeState
from discoverd.core.gossip.suspicion import suspicion_k, suspicion_timeouts

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
BENCH_FILE = Path(__file__).resolve()


def log(msg: str) -> None:
    print(f"[gossip {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_config(preset: str, scale: float, name: str = "", push_pull: float | None = None) -> GossipConfig:
    """The preset with every interval of :data:`SCALED` divided by ``scale``; ``push_pull`` (seconds, not
    scaled) overrides the push/pull interval (0 = none, as go-micro)."""
    base = PRESETS[preset]()
    changes = {f: getattr(base, f) / scale for f in SCALED}
    if push_pull is not None:
        changes["push_pull_interval"] = push_pull
    return base.replace(name=name, **changes)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


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
        return [n for n in self.nodes.values() if not n.closed]

    async def _track(self, node: MemberlistNode) -> None:
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
        suspect: dict[str, float] = {}
        dead: dict[str, float] = {}
        table_n: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        live = self.live()
        while True:
            now = time.monotonic()
            for node in live:
                m = node.table.nodes.get(victim)
                if m is not None and m.state == NodeState.SUSPECT and node.name not in suspect:
                    suspect[node.name] = now
                    table_n[node.name] = len(node.table.nodes)
                if (m is None or m.state == NodeState.DEAD) and node.name not in dead:
                    dead[node.name] = now
            if len(dead) == len(live) or now >= deadline:
                break
            await asyncio.sleep(self.poll)
        await asyncio.sleep(0)  # let the trackers stamp the last leave events
        for observer, member, t in self.leaves:
            if member == victim and observer in dead:
                dead[observer] = min(dead[observer], t)
        return {
            "suspect": suspect,
            "dead": dead,
            "missing": [n.name for n in live if n.name not in dead],
            "table_n": table_n,
        }

    async def snapshot(self) -> dict[str, Any]:
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
        for node in list(self.nodes.values()):
            await node.shutdown()
        await self._lag_off()
        for t in list(self._tasks):
            t.cancel()


METHODS = ("start", "join", "expect", "wait_members", "kill", "wait_dead", "snapshot", "lag", "stop")


async def dispatch(host: Host, method: str, args: dict[str, Any]) -> Any:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    return await getattr(host, method)(**args)


# -- workers: this process, or child processes ------------------------------------------------------------


class Worker(Protocol):
    pid: int

    async def call(self, method: str, **args: Any) -> Any: ...

    async def close(self) -> None: ...


class LocalWorker:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.pid = os.getpid()

    async def call(self, method: str, **args: Any) -> Any:
        return await dispatch(self.host, method, args)

    async def close(self) -> None:
        await self.host.stop()


class RemoteWorker:
    """A ``--worker`` child process; one JSON line per request and per answer, matched by id."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(cls, a: argparse.Namespace) -> RemoteWorker:
        cmd = [sys.executable, str(BENCH_FILE), "--worker", "--preset", a.preset, "--scale", str(a.scale)]
        if a.push_pull is not None:
            cmd += ["--push-pull", str(a.push_pull)]
        proc = await asyncio.create_subprocess_exec(
            *cmd, "--loop", a.loop, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        log(f"worker pid {proc.pid}")
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            fut = self._waiting.pop(msg["id"], None)
            if fut is None or fut.done():
                continue
            if "error" in msg:
                fut.set_exception(RuntimeError(f"worker {self.pid}: {msg['error']}"))
            else:
                fut.set_result(msg["result"])
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError(f"worker {self.pid} exited"))

    async def call(self, method: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self._ids += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = fut
        self.proc.stdin.write(json.dumps({"id": self._ids, "method": method, "args": args}).encode() + b"\n")
        await self.proc.stdin.drain()
        return await fut

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(RuntimeError, ConnectionError):
                await asyncio.wait_for(self.call("stop"), 10)
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                os.kill(self.proc.pid, 9)
                await self.proc.wait()
        self._reader.cancel()


async def worker_main(a: argparse.Namespace) -> None:
    """``--worker``: serve the Host methods on stdin/stdout until EOF."""
    host = Host(a.preset, a.scale, a.push_pull)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: set[asyncio.Task[None]] = set()

    async def serve(req: dict[str, Any]) -> None:
        try:
            reply = {"id": req["id"], "result": await dispatch(host, req["method"], req["args"])}
        except Exception as e:
            reply = {"id": req["id"], "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        task = loop.create_task(serve(json.loads(line)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await host.stop()


# -- the benchmark ----------------------------------------------------------------------------------------


class Cluster:
    """The controller's view: which worker holds which node."""

    def __init__(self, workers: list[Worker], n: int) -> None:
        self.workers = workers
        self.n = n
        self.where: dict[str, Worker] = {}
        self.addrs: dict[str, str] = {}
        self.next_id = 0
        self.killed: set[str] = set()

    def new_names(self, count: int) -> list[str]:
        names = [f"node-{self.next_id + i:02d}" for i in range(count)]
        self.next_id += count
        return names

    async def start(self, names: list[str], worker: Worker | None = None) -> None:
        groups: dict[int, list[str]] = {}
        for i, name in enumerate(names):
            w = worker or self.workers[(self.next_id - len(names) + i) % len(self.workers)]
            self.where[name] = w
            groups.setdefault(id(w), []).append(name)
        by_id = {id(w): w for w in self.workers}
        results = await asyncio.gather(
            *(by_id[k].call("start", names=v, target=self.n) for k, v in groups.items())
        )
        for r in results:
            self.addrs.update(cast(dict[str, str], r))

    async def each(self, method: str, **args: Any) -> list[Any]:
        return list(await asyncio.gather(*(w.call(method, **args) for w in self.workers)))

    async def snapshot(self) -> dict[str, Any]:
        snaps = await self.each("snapshot")
        total: dict[str, Any] = {"refutations": {}, "leaves": []}
        for s in snaps:
            for k in ("packets", "push_pulls", "bad", "dropped", "queued", "suspects", "nodes"):
                total[k] = total.get(k, 0) + s[k]
            total["refutations"].update(s["refutations"])
            total["leaves"] += s["leaves"]
            total["awareness"] = max(total.get("awareness", 0), s["awareness"])
        own = resource.getrusage(resource.RUSAGE_SELF)
        total["cpu"] = (
            own.ru_utime
            + own.ru_stime
            + sum(s["cpu"] for w, s in zip(self.workers, snaps, strict=True) if w.pid != os.getpid())
        )
        return total

    async def lag(self, on: bool) -> dict[str, float]:
        lags = await self.each("lag", on=on)
        return {
            "p50": max(x["p50"] for x in lags),
            "p99": max(x["p99"] for x in lags),
            "max": max(x["max"] for x in lags),
        }

    async def wait_members(self, timeout: float) -> tuple[dict[str, float | None], dict[str, int]]:
        reached: dict[str, float | None] = {}
        members: dict[str, int] = {}
        for r in await self.each("wait_members", timeout=timeout):
            reached.update(r["reached"])
            members.update(r["members"])
        return reached, members


def formulas(cfg: GossipConfig, n: int) -> dict[str, Any]:
    rounds = math.ceil(math.log(n) / math.log(cfg.gossip_nodes + 1))
    lo, hi = suspicion_timeouts(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval)
    return {
        "gossip_rounds": rounds,
        "join": cfg.gossip_interval * rounds,
        "push_pull": cfg.push_pull_interval,
        "retransmit_limit": retransmit_limit(cfg.retransmit_mult, n),
        "suspicion_min": lo,
        "suspicion_max": hi,
        "suspicion_k": suspicion_k(cfg.suspicion_mult, n),
        "detect_expected": cfg.probe_interval + lo,
        "detect_max": cfg.probe_interval + hi,
        "packets_per_s": 2 / cfg.probe_interval,
    }


async def phase_join(
    c: Cluster, a: argparse.Namespace, cfg: GossipConfig, rng: random.Random
) -> dict[str, Any]:
    names = c.new_names(a.nodes)
    await c.start(names)
    log(f"{len(names)} nodes started; joining")
    pairs = [
        [name, c.addrs[names[0] if a.join_first else names[rng.randrange(i)]]]
        for i, name in enumerate(names)
        if i
    ]
    await c.lag(on=True)
    t0 = time.monotonic()
    per_worker: dict[int, list[list[str]]] = {}
    for name, seed in pairs:
        per_worker.setdefault(id(c.where[name]), []).append([name, seed])
    by_id = {id(w): w for w in c.workers}
    joins = await asyncio.gather(*(by_id[k].call("join", pairs=v) for k, v in per_worker.items()))
    timeout = max(3 * cfg.push_pull_interval, 50 * formulas(cfg, a.nodes)["join"], 5.0)
    if a.join_timeout is not None:
        timeout = a.join_timeout
    reached, members = await c.wait_members(timeout)
    lag = await c.lag(on=False)
    times = [t - t0 for t in reached.values() if t is not None]
    converged = len(times) == a.nodes
    res: dict[str, Any] = {
        "converged": converged,
        "seconds": max(times) if converged else None,
        "median_node": statistics.median(times) if times else None,
        "first_node": min(times) if times else None,
        "joins_took": max(j["done"] for j in joins) - t0,
        "join_errors": [e for j in joins for e in j["errors"]],
        "timeout": timeout,
        "min_members": min(members.values()),
        "lag": lag,
    }
    if not converged:
        res["unconverged"] = {k: v for k, v in members.items() if v < a.nodes}
        res["missing_pairs"] = sum(a.nodes - v for v in members.values())
    log(f"join: converged={converged} in {res['seconds']} s (joins took {res['joins_took']:.3f} s)")
    return res


async def settle(c: Cluster, cfg: GossipConfig, limit: float) -> float:
    """Wait until every broadcast queue is empty (at most ``limit`` s); returns how long it took."""
    t0 = time.monotonic()
    while (await c.snapshot())["queued"] and time.monotonic() - t0 < limit:  # noqa: ASYNC110 - remote state
        await asyncio.sleep(cfg.gossip_interval)
    return time.monotonic() - t0


async def phase_idle(c: Cluster, a: argparse.Namespace, cfg: GossipConfig) -> dict[str, Any]:
    settled = await settle(c, cfg, max(2.0, 20 * cfg.gossip_interval))
    await c.lag(on=False)
    before = await c.snapshot()
    t0 = time.monotonic()
    await asyncio.sleep(a.idle)
    after = await c.snapshot()
    secs = time.monotonic() - t0
    nodes = after["nodes"]
    cpu = after["cpu"] - before["cpu"]
    refutations = sum(after["refutations"].values()) - sum(before["refutations"].values())
    res = {
        "seconds": secs,
        "settle": settled,
        "cpu_seconds": cpu,
        "cpu_pct_per_node": 100 * cpu / secs / nodes,
        "cpu_pct_per_node_scale1": 100 * cpu / secs / nodes / a.scale,
        "cpu_pct_total": 100 * cpu / secs,
        "packets_per_s_per_node": (after["packets"] - before["packets"]) / nodes / secs,
        "push_pulls": after["push_pulls"] - before["push_pulls"],
        "refutations": refutations,
        "false_deaths": [x for x in after["leaves"] if x not in before["leaves"]],
        "awareness_max": after["awareness"],
        "suspects_at_end": after["suspects"],
        "bad_or_dropped": after["bad"] + after["dropped"] - before["bad"] - before["dropped"],
    }
    log(
        f"idle: {res['cpu_pct_per_node']:.3f} % of a core per node, {res['packets_per_s_per_node']:.1f} pkt/s"
    )
    return res


async def phase_fail(
    c: Cluster, a: argparse.Namespace, cfg: GossipConfig, rng: random.Random, round_no: int
) -> dict[str, Any]:
    live = [n for n in c.where if n != "node-00" and n not in c.killed]
    victim = rng.choice(live)
    f = formulas(cfg, a.nodes)
    timeout = 1.5 * (cfg.awareness_max_multiplier * cfg.probe_interval + f["suspicion_max"]) + 5
    await c.lag(on=True)
    t_kill = cast(float, await c.where[victim].call("kill", name=victim))
    c.killed.add(victim)
    waits = await c.each("wait_dead", victim=victim, timeout=timeout)
    lag = await c.lag(on=False)
    suspect = [t - t_kill for w in waits for t in w["suspect"].values()]
    dead = [t - t_kill for w in waits for t in w["dead"].values()]
    table_n = [n for w in waits for n in w["table_n"].values()]
    missing = [m for w in waits for m in w["missing"]]
    n_used = int(statistics.median(table_n)) if table_n else a.nodes
    fr = formulas(cfg, n_used)
    res: dict[str, Any] = {
        "victim": victim,
        "all_dead": max(dead) if not missing else None,
        "first_suspect": min(suspect) if suspect else None,
        "first_dead": min(dead) if dead else None,
        "median_dead": statistics.median(dead) if dead else None,
        "suspected_by": len(suspect),
        "missing": missing,
        "table_n": n_used,
        "expected": fr["detect_expected"],
        "min_bound": fr["suspicion_min"],
        "max_bound": fr["detect_max"],
        "lag": lag,
    }
    res["ratio"] = res["all_dead"] / fr["detect_expected"] if res["all_dead"] is not None else None
    log(
        f"failure {round_no}: {victim} dead everywhere after {res['all_dead']} s "
        f"(first suspect {res['first_suspect']}, first dead {res['first_dead']})"
    )
    # Replace it so the next round again has N live nodes; the rejoin is timed as well.
    (name,) = c.new_names(1)
    await c.each("expect", n=a.nodes)
    await c.start([name], c.where[victim])
    t0 = time.monotonic()
    await c.where[name].call("join", pairs=[[name, c.addrs["node-00"]]])
    reached, members = await c.wait_members(max(3 * cfg.push_pull_interval, 5.0))
    times = [t - t0 for t in reached.values() if t is not None]
    res["rejoin"] = max(times) if len(times) == len(reached) else None
    res["rejoin_min_members"] = min(members.values())
    return res


async def run(a: argparse.Namespace) -> dict[str, Any]:
    cfg = make_config(a.preset, a.scale, push_pull=a.push_pull)
    rng = random.Random(a.seed)
    workers: list[Worker] = []
    if a.procs > 1:
        workers = [await RemoteWorker.spawn(a) for _ in range(a.procs)]
    else:
        workers = [LocalWorker(Host(a.preset, a.scale, a.push_pull))]
    c = Cluster(workers, a.nodes)
    out: dict[str, Any] = {
        "nodes": a.nodes,
        "preset": a.preset,
        "scale": a.scale,
        "procs": max(1, a.procs),
        "loop": a.loop,
        "seed": a.seed,
        "config": {
            f: getattr(cfg, f)
            for f in (
                *SCALED,
                "tcp_timeout",
                "gossip_nodes",
                "retransmit_mult",
                "suspicion_mult",
                "suspicion_max_timeout_mult",
                "indirect_checks",
            )
        },
        "formula": formulas(cfg, a.nodes),
    }
    try:
        out["join"] = await phase_join(c, a, cfg, rng)
        if out["join"]["converged"]:
            out["idle"] = await phase_idle(c, a, cfg)
            out["failure"] = [await phase_fail(c, a, cfg, rng, i + 1) for i in range(a.repeat)]
            final = await c.snapshot()
            out["refutations_total"] = sum(final["refutations"].values())
            out["leaves_total"] = len(final["leaves"])
            out["false_deaths_total"] = [x for x in final["leaves"] if x[1] not in c.killed]
    finally:
        for w in workers:
            await w.close()
    return out


# -- report -----------------------------------------------------------------------------------------------


def ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [x[key] for x in rows if x[key] is not None]
    return statistics.median(vals) if vals else None


def failure_rows(fails: list[dict[str, Any]], cfg: dict[str, Any], f: dict[str, Any], n: int) -> list[str]:
    done = [x for x in fails if x["all_dead"] is not None]
    med = median_of(fails, "all_dead")
    ratio = median_of(fails, "ratio")
    x0 = fails[0]
    each = ", ".join(ms(x["all_dead"]) for x in done)
    if len(done) < len(fails):
        each += f"; {len(fails) - len(done)} round(s) where not every node marked it DEAD"
    rejoin = median_of(fails, "rejoin")
    join_f = f["join"]
    ratio_s = "–" if ratio is None else f"{ratio:.2f}"
    return [
        f"| failure: shutdown() → all {n - 1} others mark it DEAD, median of {len(fails)} | **{ms(med)}** "
        f"({each}) | probe + min = {ms(cfg['probe_interval'])} + {ms(x0['min_bound'])} = "
        f"{ms(x0['expected'])} (bounds: min {ms(x0['min_bound'])}, max = probe + max "
        f"{ms(x0['max_bound'])}; n = {x0['table_n']}, k = {f['suspicion_k']}) | {ratio_s} |",
        f"| failure: first suspicion / first DEAD / median node DEAD (medians) | "
        f"{ms(median_of(fails, 'first_suspect'))} / {ms(median_of(fails, 'first_dead'))} / "
        f"{ms(median_of(fails, 'median_dead'))} (loop lag p99 {ms(max(x['lag']['p99'] for x in fails))}) "
        "| – | – |",
        f"| rejoin: a new node joins node-00 → all {n} list {n} (median of {len(fails)}) | "
        f"{'not converged' if rejoin is None else ms(rejoin)} | {ms(f['join'])} | "
        f"{'–' if rejoin is None else f'{rejoin / join_f:.1f}'} |",
    ]


def report(r: dict[str, Any]) -> str:
    cfg, f = r["config"], r["formula"]
    pp = ms(cfg["push_pull_interval"]) if cfg["push_pull_interval"] else "off"
    n = r["nodes"]
    lines = [
        f"gossip: {n} nodes, preset {r['preset']}, scale {r['scale']:g} (intervals ÷ {r['scale']:g}), "
        f"{r['procs']} process(es), {r['loop']}, seed {r['seed']}",
        f"intervals used: gossip {ms(cfg['gossip_interval'])} to {cfg['gossip_nodes']} nodes, probe "
        f"{ms(cfg['probe_interval'])} (timeout {ms(cfg['probe_timeout'])}, {cfg['indirect_checks']} "
        f"indirect), push/pull {pp}, gossip to the dead "
        f"{ms(cfg['gossip_to_the_dead_time'])}, "
        f"tcp timeout {ms(cfg['tcp_timeout'])} (not scaled); retransmit limit {cfg['retransmit_mult']} × "
        f"⌈log10({n + 1})⌉ = {f['retransmit_limit']}; suspicion mult {cfg['suspicion_mult']}, max mult "
        f"{cfg['suspicion_max_timeout_mult']}, k = {f['suspicion_k']}",
        "",
        "| measurement | measured | memberlist formula | measured / formula |",
        "|---|---|---|---|",
    ]
    j = r["join"]
    if j["converged"]:
        jm = (
            f"**{ms(j['seconds'])}** (median node {ms(j['median_node'])}; the {n - 1} join calls took "
            f"{ms(j['joins_took'])}; loop lag p99 {ms(j['lag']['p99'])})"
        )
        ratio = f"{j['seconds'] / f['join']:.1f} (median node {j['median_node'] / f['join']:.1f})"
    else:
        jm = (
            f"**not converged** within {ms(j['timeout'])}: {len(j['unconverged'])} nodes miss "
            f"{j['missing_pairs']} (node, member) pairs of {n * (n - 1)}; median node {ms(j['median_node'])}"
        )
        ratio = "–"
    lines.append(
        f"| join: first join() → all {n} list {n} members | {jm} | {ms(f['join'])} = "
        f"{ms(cfg['gossip_interval'])} × ⌈ln {n} / ln {cfg['gossip_nodes'] + 1}⌉ = {f['gossip_rounds']} "
        f"rounds (repair bound: push/pull {pp}) | {ratio} |"
    )
    fails = r.get("failure", [])
    if fails:
        lines += failure_rows(fails, cfg, f, n)
    idle = r.get("idle")
    if idle:
        lines.append(
            f"| idle CPU per node ({idle['seconds']:.1f} s window) | **{idle['cpu_pct_per_node']:.3f} % of a "
            f"core** (÷ scale: {idle['cpu_pct_per_node_scale1']:.3f} %; all {n}: "
            f"{idle['cpu_pct_total']:.1f} %; {idle['push_pulls']} push/pulls) | – | – |"
        )
        lines.append(
            f"| idle packets received per node | {idle['packets_per_s_per_node']:.2f} /s | "
            f"2 / probe interval = {f['packets_per_s']:.2f} /s | "
            f"{idle['packets_per_s_per_node'] / f['packets_per_s']:.2f} |"
        )
        lines.append(
            f"| idle health | {idle['refutations']} refutations, {len(idle['false_deaths'])} false deaths, "
            f"awareness max {idle['awareness_max']}, {idle['suspects_at_end']} open suspicions, "
            f"{idle['bad_or_dropped']} bad/dropped | – | – |"
        )
    if "refutations_total" in r:
        lines.append(
            f"| whole run | {r['refutations_total']} refutations, {len(r['false_deaths_total'])} false "
            f"deaths ({r['leaves_total']} leave events in all) | – | – |"
        )
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="local", help="memberlist preset (local)")
    p.add_argument("--scale", type=float, default=1.0, help="divide every interval by this (1)")
    p.add_argument(
        "--push-pull",
        type=float,
        help="push/pull interval in seconds, not scaled (default: the preset's ÷ scale; 0 = none: go-micro)",
    )
    p.add_argument("--nodes", type=int, default=32, help="cluster size (32)")
    p.add_argument("--repeat", type=int, default=3, help="failure-detection rounds (3)")
    p.add_argument("--idle", type=float, help="idle window in seconds (default 10 / scale)")
    p.add_argument("--procs", type=int, default=1, help="worker processes holding the nodes (1 = this one)")
    p.add_argument(
        "--join-first", action="store_true", help="every node joins node 0 (default: a random earlier one)"
    )
    p.add_argument("--join-timeout", type=float, help="seconds to wait for convergence (3 × push/pull)")
    p.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (uvloop)")
    p.add_argument("--json", help="also write the results as JSON to this file ('-' = stdout)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.scale <= 0 or a.nodes < 3 or a.repeat < 0:
        p.error("need --scale > 0, --nodes >= 3, --repeat >= 0")
    if a.idle is None:
        a.idle = 10.0 / a.scale
    if a.seed is None:
        a.seed = random.randrange(1_000_000)
    return a


def run_loop(coro: Coroutine[Any, Any, Any], loop: str) -> Any:
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            log("uvloop not installed: using asyncio")
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.worker:
        run_loop(worker_main(a), a.loop)
        return 0
    r = cast(dict[str, Any], run_loop(run(a), a.loop))
    r["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    r["argv"] = sys.argv
    print(report(r), flush=True)
    if a.json:
        text = json.dumps(r, indent=2, default=str) + "\n"
        if a.json == "-":
            sys.stdout.write(text)
        else:
            Path(a.json).write_text(text)
    ok = (
        r["join"]["converged"]
        and not r.get("false_deaths_total")
        and all(x["all_dead"] is not None for x in r.get("failure", []))
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
