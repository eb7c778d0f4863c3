"""discoverd benchmarks: server throughput, fan-out and memory; client SDK fetch, propagation, scale; gossip.

    python bench/run.py                 # every benchmark (same as --all)
    python bench/run.py renew fetch     # some of them
    python bench/run.py polls --polls 2000 --json out.json
    python bench/run.py client-fetch propagation many-clients   # the client SDK benchmarks
    python bench/run.py cluster-propagation cluster-renew replication-queue   # 3-node cluster benchmarks
    python bench/run.py gossip --gossip-scale 1   # 32 memberlist nodes (bench/gossip_bench.py)

Every benchmark starts its own ``discoverd serve`` on 127.0.0.1 with an OS-assigned port (and, for
renew and fetch, the hello-world baseline ``bench/baseline_server.py`` measured the same way in the
same run), and stops it by PID; many-clients also starts load-generator processes
(``bench/many_clients.py``) and stops them by PID; the cluster benchmarks start three peered nodes
(replication-queue SIGKILLs one of them by PID on purpose); gossip runs ``bench/gossip_bench.py`` (32
memberlist nodes in one child process, no server). Only loopback traffic. One result line per
benchmark on stdout; progress on stderr. See bench/README.md for what each figure means and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    client_fetch,
    cluster_propagation,
    gossip,
    many_clients_bench,
    memory,
    polls,
    propagation,
    replication_queue,
)
from bench.cluster_renew import bench_cluster_renew
from bench.fetch import bench_fetch
from bench.harness import log
from bench.renew import bench_renew

BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "renew": bench_renew,
    "fetch": bench_fetch,
    "polls": polls.bench_polls,
    "memory": memory.bench_memory,
    "client-fetch": client_fetch.bench_client_fetch,
    "propagation": propagation.bench_propagation,
    "many-clients": many_clients_bench.bench_many_clients,
    "cluster-propagation": cluster_propagation.bench_cluster_propagation,
    "cluster-renew": bench_cluster_renew,
    "replication-queue": replication_queue.bench_replication_queue,
    "gossip": gossip.bench_gossip,
}

#: Each benchmark module's options, in the order ``--help`` lists them.
OPTION_GROUPS: tuple[Callable[[argparse.ArgumentParser], None], ...] = (
    polls.add_options,
    memory.add_options,
    client_fetch.add_options,
    propagation.add_options,
    many_clients_bench.add_options,
    cluster_propagation.add_options,
    replication_queue.add_options,
    gossip.add_options,
)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Which benchmarks, and the wrk settings of renew, fetch and cluster-renew."""
    p.add_argument("bench", nargs="*", help=f"benchmarks to run: {', '.join(BENCHES)} (default: all)")
    p.add_argument("--all", action="store_true", help="run every benchmark (the default)")
    p.add_argument("--duration", type=int, default=10, help="wrk seconds per run (10)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the baseline runs")
    p.add_argument("--fetch-instances", type=int, default=20, help="instances of the fetched app (20)")


def parser() -> argparse.ArgumentParser:
    """The command line of the benchmarks (``bench/ab.py`` and ``bench/http_library.py`` add to it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_options(p)
    for add_options in OPTION_GROUPS:
        add_options(p)
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; exits (status 2) on an unknown benchmark name."""
    p = parser()
    ns = p.parse_args(argv)
    unknown = [b for b in ns.bench if b not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    return ns


def run_one(name: str, a: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Run benchmark ``name``; (its record, whether it ran). A failure to run is printed as a
    ``FAILED`` line and recorded as ``error``."""
    t0 = time.monotonic()
    ok = True
    try:
        res = BENCHES[name](a)
    except Exception as exc:
        ok = False
        print(f"{name}: FAILED: {exc}", flush=True)
        res = {"bench": name, "error": str(exc)}
    res["seconds"] = round(time.monotonic() - t0, 1)
    log(f"{name} took {res['seconds']} s")
    return res, ok


def write_json(path: Path, results: list[dict[str, Any]]) -> None:
    """The results with the date, CPU count and command line."""
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "argv": sys.argv}
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks in order (Ctrl-C ends the run, keeping the results so far); the exit
    status is 1 if a benchmark failed to run (a missed target is not a failure)."""
    a = parse_args(argv)
    names = list(BENCHES) if a.all or not a.bench else list(dict.fromkeys(a.bench))
    for s in a.sources.split(","):
        if s and not s.startswith("127."):
            raise SystemExit(f"--sources must be loopback addresses, got {s}")
    results: list[dict[str, Any]] = []
    failed = 0
    with contextlib.suppress(KeyboardInterrupt):
        for name in names:
            res, ok = run_one(name, a)
            results.append(res)
            failed += not ok
    if a.json is not None:
        write_json(a.json, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
