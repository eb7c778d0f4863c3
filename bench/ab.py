"""A/B: the same benchmarks on two source trees, alternated (A, B, A, B, ...) in one run.

This 2-core machine is shared and noisy: a figure measured minutes apart says little, a ratio of
figures measured side by side says more. ``ab.py`` runs the server of tree A, then of tree B, with
the same load, ``--rounds`` times, and reports each run and the ratio of the medians (B / A).

* **A** is a ``src`` directory of another checkout (for example a ``git worktree`` of the previous
  commit: ``git worktree add /tmp/base HEAD~1``), given as ``--a-src /tmp/base/src``;
* **B** is this checkout's ``src`` unless ``--b-src`` says otherwise;
* ``--a-args`` / ``--b-args`` add server flags to one side (the same tree with and without a feature:
  ``--a-src src --b-args '--xds 127.0.0.1:0'``).

The server child runs with ``PYTHONPATH`` set to the tree's ``src``, so the same interpreter and
dependencies serve both trees. Benchmarks: ``renew`` and ``fetch`` (wrk, req/s), ``polls`` (held
polls: KB per held poll and ms until all are answered after one register, raw client).

Usage::

    .venv/bin/python bench/ab.py --a-src /tmp/base/src [--rounds 3] [--duration 10] [renew fetch polls]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run
from bench.fetch import bench_fetch
from bench.harness import log
from bench.polls import bench_polls
from bench.renew import bench_renew

BENCHES: dict[
    str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Callable[[dict[str, Any]], float], str]
] = {
    "renew": (bench_renew, lambda r: float(r["rps"]), "req/s"),
    "fetch": (bench_fetch, lambda r: float(r["rps"]), "req/s"),
    "polls_kb": (bench_polls, lambda r: float(r["runs"][0]["kb_per_poll"]), "KB per held poll"),
    "polls_ms": (
        bench_polls,
        lambda r: float(r["runs"][0]["all_answered_ms"]),
        "ms until all answered",
    ),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """``bench/run.py``'s command line plus the trees, rounds and per-side server flags; the raw poll
    client only, no baseline runs."""
    p = run.parser()
    p.description = __doc__.splitlines()[0] if __doc__ else None
    p.add_argument("--a-src", type=Path, required=True, help="the src directory of tree A")
    p.add_argument("--b-src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    p.add_argument("--rounds", type=int, default=3, help="A/B pairs per benchmark (3)")
    p.add_argument("--a-args", default="", help="extra server flags for A (e.g. '--xds 127.0.0.1:0')")
    p.add_argument("--b-args", default="", help="extra server flags for B")
    a = p.parse_args(argv)
    a.baseline = False
    a.poll_clients = "raw"
    return a


def with_tree(
    src: Path, args: str, fn: Callable[[argparse.Namespace], dict[str, Any]], a: argparse.Namespace
) -> dict[str, Any]:
    """Run ``fn`` with the server child importing discoverd from ``src``, with ``args`` as extra flags."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_SERVER_ARGS")}
    os.environ["PYTHONPATH"], os.environ["BENCH_SERVER_ARGS"] = str(src), args
    try:
        return fn(a)
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def alternate(name: str, a: argparse.Namespace, results: dict[str, dict[str, list[float]]]) -> None:
    """``--rounds`` runs of benchmark ``name`` on tree A, then B; its figures appended to ``results``."""
    keys = ["polls_kb", "polls_ms"] if name == "polls" else [name]
    fn = BENCHES[keys[0]][0]
    for key in keys:
        results[key] = {"A": [], "B": []}
    for round_no in range(a.rounds):
        for side, src, args in (("A", a.a_src, a.a_args), ("B", a.b_src, a.b_args)):
            log(f"ab: {name} round {round_no + 1}/{a.rounds}, tree {side} ({src}) {args}")
            r = with_tree(src, args, fn, a)
            for key in keys:
                results[key][side].append(BENCHES[key][1](r))


def print_results(a: argparse.Namespace, results: dict[str, dict[str, list[float]]]) -> None:
    """One line per figure: the medians of A and B, B / A, and every run."""
    print(f"A = {a.a_src} {a.a_args}, B = {a.b_src} {a.b_args}, {a.rounds} alternated round(s)", flush=True)
    for key, sides in results.items():
        ma, mb = statistics.median(sides["A"]), statistics.median(sides["B"])
        runs = " ".join(f"A {x:,.1f} / B {y:,.1f}" for x, y in zip(sides["A"], sides["B"], strict=True))
        print(
            f"{key} ({BENCHES[key][2]}): median A {ma:,.2f}, B {mb:,.2f}, B/A {mb / ma:.3f} | {runs}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Alternate the chosen benchmarks (renew, fetch and polls by default) between the trees."""
    a = parse(argv)
    results: dict[str, dict[str, list[float]]] = {}
    for name in list(a.bench or ["renew", "fetch", "polls"]):
        alternate(name, a, results)
    print_results(a, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
