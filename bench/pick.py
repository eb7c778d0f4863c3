"""Micro-benchmark of ``Balancer.pick`` over 100 instances (target: median ≤ 3 µs per pick).

Pure timing, no server: ``.venv/bin/python bench/pick.py [--picks N]``. For each balancer, after
a warm-up (which also builds its state for the list), every ``pick`` + ``report`` pair on an
unchanged list of 100 instances (weights 10/20/30/40, two zones) is timed on its own with
``time.perf_counter_ns``; the timer pair's own cost (printed) is included. One line per balancer:
median and p99 of ``pick`` alone, and of ``pick`` + ``report``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import pct
from discoverd.core.balancing import Balancer, ZoneAffinity, make_balancer
from discoverd.model import Instance


def instances(n: int = 100) -> list[Instance]:
    """``n`` instances of one app, weights 10/20/30/40, zones sh001 and sh002."""
    return [
        Instance(
            zone="sh001" if i % 2 else "sh002",
            env="dev",
            appid="bench.svc",
            hostname=f"bench-{i:03d}",
            addrs=[f"http://10.0.{i // 250}.{i % 250}:8000"],
            metadata={"weight": str(10 * (1 + i % 4))},
        )
        for i in range(n)
    ]


def measure(bal: Balancer, inst: list[Instance], picks: int) -> tuple[list[int], list[int]]:
    """After 1,000 warm-up picks: per pick, ns of ``pick`` alone and of ``pick`` + ``report``."""
    clock = time.perf_counter_ns
    for _ in range(1_000):
        bal.report(bal.pick(inst), True, 0.001)
    pick_ns, pair_ns = [], []
    for _ in range(picks):
        t0 = clock()
        chosen = bal.pick(inst)
        t1 = clock()
        bal.report(chosen, True, 0.001)
        t2 = clock()
        pick_ns.append(t1 - t0)
        pair_ns.append(t2 - t0)
    return pick_ns, pair_ns


def p99(values: list[int]) -> float:
    """The 99th percentile (nearest rank) of nanosecond timings, in µs."""
    return pct(sorted(values), 0.99) / 1000


def main() -> None:
    """One line per balancer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=100_000)
    args = parser.parse_args()
    inst = instances()
    clock = time.perf_counter_ns
    overhead = statistics.median(-clock() + clock() for _ in range(10_000))
    print(f"timer pair ≈ {overhead:.0f} ns (included below); {len(inst)} instances, {args.picks} picks each")
    cases: dict[str, Callable[[], Balancer]] = {
        "least-used": lambda: make_balancer("least-used"),
        "round-robin": lambda: make_balancer("round-robin"),
        "random": lambda: make_balancer("random", rng=random.Random(1)),
        "p2c": lambda: make_balancer("p2c", rng=random.Random(1)),
    }
    cases["zone(least-used)"] = lambda: ZoneAffinity(make_balancer("least-used"), "sh001")
    cases["zone+scheduler(p2c)"] = lambda: ZoneAffinity(
        make_balancer("p2c", rng=random.Random(1)), "sh001", {"sh001": 3, "sh002": 1}, rng=random.Random(2)
    )
    for name, factory in cases.items():
        pick_ns, pair_ns = measure(factory(), inst, args.picks)
        med = statistics.median(pick_ns) / 1000
        verdict = "ok" if med <= 3.0 else "MISSED"
        print(
            f"{name:22s} pick median {med:6.2f} µs  p99 {p99(pick_ns):6.2f} µs  |  pick+report median "
            f"{statistics.median(pair_ns) / 1000:6.2f} µs  p99 {p99(pair_ns):6.2f} µs  [{verdict}: ≤ 3 µs]"
        )


if __name__ == "__main__":
    main()
