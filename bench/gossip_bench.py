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
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gossip_host import PRESETS
from bench.gossip_phases import run
from bench.gossip_report import report
from bench.gossip_workers import worker_main
from bench.harness import run_loop


def parser() -> argparse.ArgumentParser:
    """The command line (``--worker`` is how the script starts its own worker processes)."""
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
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line; ``--idle`` defaults to 10 / scale, ``--seed`` to a random one."""
    p = parser()
    a = p.parse_args(argv)
    if a.scale <= 0 or a.nodes < 3 or a.repeat < 0:
        p.error("need --scale > 0, --nodes >= 3, --repeat >= 0")
    if a.idle is None:
        a.idle = 10.0 / a.scale
    if a.seed is None:
        a.seed = random.randrange(1_000_000)
    return a


def write_json(r: dict[str, Any], dest: str) -> None:
    """Every figure as JSON to the file ``dest`` (``-``: stdout)."""
    text = json.dumps(r, indent=2, default=str) + "\n"
    if dest == "-":
        sys.stdout.write(text)
    else:
        Path(dest).write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--worker``, serve as a worker); 1 when the cluster did not converge,
    a dead node was not detected, or a live node was declared dead."""
    a = parse_args(argv)
    if a.worker:
        run_loop(worker_main(a), a.loop, "gossip")
        return 0
    r = run_loop(run(a), a.loop, "gossip")
    r["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    r["argv"] = sys.argv
    print(report(r), flush=True)
    if a.json:
        write_json(r, a.json)
    ok = (
        r["join"]["converged"]
        and not r.get("false_deaths_total")
        and all(x["all_dead"] is not None for x in r.get("failure", []))
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
