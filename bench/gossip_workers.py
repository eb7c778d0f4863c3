"""Where the gossip benchmark's nodes run: this process (:class:`LocalWorker`) or ``--procs`` child
processes (:class:`RemoteWorker`, a JSON line per request and per answer on stdin/stdout, stopped by PID),
and the controller's view of the cluster over them (:class:`GossipCluster`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
from typing import Any, Protocol, cast

from bench.gossip_host import Host, dispatch, log
from bench.procs import BENCH_DIR, reap, spawn_piped, write_line

#: The script a worker process runs (with ``--worker``).
BENCH_FILE = BENCH_DIR / "gossip_bench.py"


class Worker(Protocol):
    """Holds some nodes; ``call`` runs a :class:`~bench.gossip_host.Host` method on them."""

    pid: int

    async def call(self, method: str, **args: Any) -> Any: ...

    async def close(self) -> None: ...


class LocalWorker:
    """The nodes of this process (``--procs 1``)."""

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
        """Start ``gossip_bench.py --worker`` with this run's preset, scale, push/pull and loop."""
        cmd = [sys.executable, str(BENCH_FILE), "--worker", "--preset", a.preset, "--scale", str(a.scale)]
        if a.push_pull is not None:
            cmd += ["--push-pull", str(a.push_pull)]
        proc = await spawn_piped(*cmd, "--loop", a.loop)
        log(f"worker pid {proc.pid}")
        return cls(proc)

    async def _read(self) -> None:
        """Resolve the waiting calls from the answer lines; fail them all once the worker exits."""
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
        """Send one request; its result (RuntimeError with the worker's error, or if it exited)."""
        self._ids += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = fut
        await write_line(self.proc, json.dumps({"id": self._ids, "method": method, "args": args}))
        return await fut

    async def close(self) -> None:
        """Stop its nodes, close its stdin; SIGKILL by PID if it has not exited 10 s later."""
        if self.proc.returncode is None:
            with contextlib.suppress(RuntimeError, ConnectionError):
                await asyncio.wait_for(self.call("stop"), 10)
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            await reap(self.proc, 10)
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


# -- the controller's view ---------------------------------------------------------------------------------


class GossipCluster:
    """The controller's view: which worker holds which node (``n`` nodes wanted), their addresses, and
    the nodes killed so far."""

    def __init__(self, workers: list[Worker], n: int) -> None:
        self.workers = workers
        self.n = n
        self.where: dict[str, Worker] = {}
        self.addrs: dict[str, str] = {}
        self.next_id = 0
        self.killed: set[str] = set()

    def new_names(self, count: int) -> list[str]:
        """``count`` node names not used before (``node-NN``)."""
        names = [f"node-{self.next_id + i:02d}" for i in range(count)]
        self.next_id += count
        return names

    async def start(self, names: list[str], worker: Worker | None = None) -> None:
        """Start nodes ``names`` on ``worker``, or round-robin over the workers; records their addresses."""
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
        """Call ``method`` on every worker at once; their answers."""
        return list(await asyncio.gather(*(w.call(method, **args) for w in self.workers)))

    async def join(self, pairs: list[list[str]]) -> list[dict[str, Any]]:
        """``[[name, seed], …]``: each worker joins its nodes to their seeds, the workers at once."""
        per_worker: dict[int, list[list[str]]] = {}
        for name, seed in pairs:
            per_worker.setdefault(id(self.where[name]), []).append([name, seed])
        by_id = {id(w): w for w in self.workers}
        return list(await asyncio.gather(*(by_id[k].call("join", pairs=v) for k, v in per_worker.items())))

    async def snapshot(self) -> dict[str, Any]:
        """The workers' snapshots summed; ``cpu``: this process's CPU time plus the worker processes'."""
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
        """The worst loop lag of any worker since the last call; then the monitors are switched ``on``/off."""
        lags = await self.each("lag", on=on)
        return {
            "p50": max(x["p50"] for x in lags),
            "p99": max(x["p99"] for x in lags),
            "max": max(x["max"] for x in lags),
        }

    async def wait_members(self, timeout: float) -> tuple[dict[str, float | None], dict[str, int]]:
        """Wait until every node lists ``n`` members (or ``timeout``); per node: when, and how many."""
        reached: dict[str, float | None] = {}
        members: dict[str, int] = {}
        for r in await self.each("wait_members", timeout=timeout):
            reached.update(r["reached"])
            members.update(r["members"])
        return reached, members
