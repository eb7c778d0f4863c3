"""``gossip``: ``bench/gossip_bench.py`` as a child process (its own event loop and CPU account), read
back as JSON and summed up in one line."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import log, result
from bench.procs import BENCH_DIR


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``gossip``."""
    p.add_argument("--gossip-preset", choices=("local", "lan", "wan"), default="local", help="gossip preset")
    p.add_argument(
        "--gossip-scale", type=float, default=5.0, help="gossip: divide every interval by this (5)"
    )
    p.add_argument("--gossip-nodes", type=int, default=32, help="gossip cluster size (32)")
    p.add_argument("--gossip-repeat", type=int, default=3, help="gossip failure-detection rounds (3)")
    p.add_argument("--gossip-procs", type=int, default=1, help="gossip worker processes (1 = one loop)")


def run_child(a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Run ``gossip_bench.py`` (at most 10 minutes, then SIGKILL by PID); its JSON figures and its table.

    It starts its nodes (and, with ``--gossip-procs``, its worker processes) itself and stops them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gossip.json"
        cmd = [sys.executable, str(BENCH_DIR / "gossip_bench.py"), "--preset", a.gossip_preset]
        cmd += [
            "--scale",
            str(a.gossip_scale),
            "--nodes",
            str(a.gossip_nodes),
            "--repeat",
            str(a.gossip_repeat),
        ]
        cmd += ["--procs", str(a.gossip_procs), "--json", str(out)]
        log(f"gossip: {' '.join(cmd[1:])}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)  # progress goes to our stderr
        try:
            table, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError("gossip_bench.py did not finish within 600 s") from None
        if not out.exists():
            raise RuntimeError(f"gossip_bench.py exited {proc.returncode} without results")
        return json.loads(out.read_text()), table.decode(errors="replace")


def join_part(r: dict[str, Any]) -> str:
    """Join convergence against the gossip estimate."""
    f, j = r["formula"], r["join"]
    if not j["converged"]:
        return (
            f"join NOT CONVERGED ({j.get('missing_pairs')} member pairs missing after {j['timeout']:.0f} s)"
        )
    return (
        f"join {j['seconds']:.2f} s (median node {j['median_node']:.3f} s) vs gossip estimate "
        f"{f['join']:.3f} s = {j['seconds'] / f['join']:.1f}× (push/pull {f['push_pull']:.1f} s)"
    )


def gossip_line(r: dict[str, Any]) -> str:
    """The result line: join, failure detection, idle cost, health."""
    parts = [
        f"gossip ({r['nodes']} nodes, {r['preset']} ÷ {r['scale']:g}, {r['procs']} process(es)): "
        + join_part(r)
    ]
    fails = [x for x in r.get("failure", []) if x["all_dead"] is not None]
    if fails:
        med = statistics.median(x["all_dead"] for x in fails)
        ratio = statistics.median(x["ratio"] for x in fails)
        parts.append(
            f"failure → all DEAD median {med:.2f} s of {len(r['failure'])} vs probe + min "
            f"{fails[0]['expected']:.2f} s = {ratio:.2f}× (max bound {fails[0]['max_bound']:.2f} s)"
        )
    idle = r.get("idle")
    if idle:
        parts.append(
            f"idle {idle['cpu_pct_per_node']:.3f} % of a core per node (÷ scale "
            f"{idle['cpu_pct_per_node_scale1']:.3f} %), {idle['packets_per_s_per_node']:.1f} pkt/s per node"
        )
    if "refutations_total" in r:
        parts.append(f"{r['refutations_total']} refutations, {len(r['false_deaths_total'])} false deaths")
    return " | ".join(parts)


def bench_gossip(a: argparse.Namespace) -> dict[str, Any]:
    """The ``gossip`` benchmark; its result record (every figure of ``gossip_bench.py`` and its table)."""
    r, table = run_child(a)
    return result("gossip", gossip_line(r), **r, table=table)
