"""CPU of the client SDK per long-poll answer, in process (no server, no network).

The answers are the bytes a node sends to a client watching 6 apps (5 apps × 3 instances and 1 app ×
20 instances, production-looking fields and metadata like ``bench/node_api.py``'s ``service_instance``).
Each answer changes one instance (timestamps and metadata) of one app, round-robin over the apps:

* ``all``: every watched app is in each answer (the changed one with a new ``latest_timestamp``);
* ``one``: each answer holds only the changed app.

Per answer the client does what its poll loop does after the HTTP reply: decode the envelope
(:class:`~discoverd.client.transport.Answer`), then ``Poller.handle`` (state update and one
``on_change`` per changed app). On a tree that predates ``Poller.handle`` the same steps are run
from the state (``WatchState.apply`` and the notifications), as that tree's poller did.

Usage (before/after: run on a worktree of the previous commit, alternated)::

    .venv/bin/python bench/sdk_poll.py [--answers 20000] [--rounds 3]
    PYTHONPATH=/tmp/sdk-base/src .venv/bin/python bench/sdk_poll.py
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.node_api import service_instance
from discoverd import jsoncodec
from discoverd.client.poller import Poller
from discoverd.client.transport import Answer, NodeTransport
from discoverd.core.backoff import Backoff
from discoverd.core.nodes import NodeList
from discoverd.core.watched_apps import WatchState

ZONE = "sh001"
APPS = [(f"main.app{i}-svc", 3) for i in range(5)] + [("main.big-svc", 20)]


def instance(appid: str, i: int, ts: int, status: int) -> dict[str, Any]:
    """One instance object in the server's field order (the fields of ``bench.node_api.service_instance``)."""
    spec = service_instance(appid, i, zone=ZONE)
    return {
        "region": spec.region,
        "zone": spec.zone,
        "env": "prod",
        "appid": appid,
        "hostname": spec.hostname,
        "addrs": spec.addrs,
        "version": spec.version,
        "metadata": spec.metadata,
        "status": status,
        "reg_timestamp": 1_700_000_000_000_000_000,
        "up_timestamp": 1_700_000_000_000_000_000,
        "renew_timestamp": ts,
        "dirty_timestamp": ts,
        "latest_timestamp": ts,
    }


def answers(count: int, *, every_app: bool) -> list[bytes]:
    """``count`` encoded ``polls`` answers; answer k changes instance k of app k (round-robin)."""
    t0 = 1_700_000_000_000_000_000
    state: dict[str, list[dict[str, Any]]] = {a: [instance(a, i, t0, 1) for i in range(n)] for a, n in APPS}
    latest = dict.fromkeys(state, t0)
    out = []
    for k in range(count):
        appid, n = APPS[k % len(APPS)]
        ts = t0 + k + 1
        idx = (k // len(APPS)) % n
        state[appid][idx] = instance(appid, idx, ts, 1)
        state[appid][idx]["metadata"] = {"weight": str(10 + k % 3)}
        latest[appid] = ts
        shown = state if every_app else {appid: state[appid]}
        data = {a: {"instances": {ZONE: items}, "latest_timestamp": latest[a]} for a, items in shown.items()}
        out.append(jsoncodec.dumps({"code": 0, "data": data, "message": "0"}))
    return out


def handler(state: WatchState, on_change: Callable[[str], None]) -> Callable[[Answer], object]:
    """The poll loop's handling of one decoded answer (``Poller.handle``, or the older inline steps)."""
    if hasattr(Poller, "handle"):
        nodes = NodeList(["127.0.0.1:1"], ZONE, random.Random(1))
        poller = Poller(
            env="prod",
            hostname="bench",
            nodes=nodes,
            transport=NodeTransport(request_timeout=1.0),
            state=state,
            backoff=Backoff(),
            poll_hold=30.0,
            spawn=asyncio.ensure_future,
            on_change=on_change,
        )
        return poller.handle

    def inline(answer: Answer) -> None:
        for appid in state.apply(answer.data):
            on_change(appid)

    return inline


def run(bodies: list[bytes]) -> float:
    """Feed every answer once; CPU microseconds per answer."""
    state = WatchState()
    for appid, _ in APPS:
        state.add(appid)
    events: dict[str, asyncio.Event] = {}

    def notify(appid: str) -> None:  # what AsyncClient._notify does, with a waiter each time
        events.setdefault(appid, asyncio.Event()).set()
        events.pop(appid)

    handle = handler(state, notify)
    handle(Answer(jsoncodec.loads(bodies[0])))  # the first answer of a client decodes everything
    t = time.process_time()
    for body in bodies[1:]:
        handle(Answer(jsoncodec.loads(body)))
    return (time.process_time() - t) / (len(bodies) - 1) * 1e6


def main() -> None:
    """One line per answer shape: median CPU µs per answer over ``--rounds``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for mode in ("all", "one"):
        bodies = answers(args.answers, every_app=mode == "all")
        size = statistics.mean(map(len, bodies))
        runs = [run(bodies) for _ in range(args.rounds)]
        shown = " ".join(f"{r:.1f}" for r in runs)
        print(f"{mode}: {statistics.median(runs):.1f} µs CPU per answer (runs {shown}; {size:.0f} B/answer)")


if __name__ == "__main__":
    main()
