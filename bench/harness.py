"""What every benchmark shares: progress log, targets and verdicts, waiting with a deadline, percentiles,
the event loop and the result record. Standard library only (load generators import it too)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

TARGETS: dict[str, tuple[str, float, str]] = {
    # benchmark: (what, target, "min" or "max")
    "renew": ("req/s", 25_000, "min"),
    "fetch": ("req/s", 25_000, "min"),
    "polls_kb": ("KB per held poll", 16, "max"),
    "polls_ms": ("ms until all answers", 400, "max"),
    "memory": ("bytes per instance", 2048, "max"),
    "client_fetch": ("µs median per cached AsyncClient.fetch", 5, "max"),
    "propagation": ("ms p99 register → watcher", 50, "max"),
    "cluster_propagation": ("ms p99 register on A → visible on B and C", 50, "max"),
    "cluster_renew": ("renew req/s on A of 3 nodes / single node", 0.60, "min"),
}


def log(msg: str, tag: str = "bench") -> None:
    """One progress line on stderr: ``[TAG HH:MM:SS] msg``."""
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def verdict(name: str, value: float) -> str:
    """``MET`` or ``MISSED``: ``value`` against the target of ``name`` in :data:`TARGETS`."""
    _, target, kind = TARGETS[name]
    ok = value >= target if kind == "min" else value <= target
    return "MET" if ok else "MISSED"


def result(name: str, line: str, **fields: Any) -> dict[str, Any]:
    """Print a benchmark's result ``line`` on stdout; returns ``{"bench": name, **fields, "line": line}``."""
    print(line, flush=True)
    return {"bench": name, **fields, "line": line}


def mib(n: float) -> str:
    """Bytes as MiB with one decimal (``26.8``)."""
    return f"{n / 2**20:.1f}"


def log_lines(text: str) -> list[str]:
    """The non-blank lines of a child's stderr."""
    return [ln for ln in text.splitlines() if ln.strip()]


# -- waiting with a deadline ---------------------------------------------------------------------------


def poll_until(cond: Callable[[], bool], within: float, step: float = 0.05) -> bool:
    """Call ``cond`` every ``step`` s until it is true (True) or ``within`` s passed (False)."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def wait_sync(what: str, cond: Callable[[], bool], within: float = 30.0, step: float = 0.05) -> float:
    """Poll ``cond`` until true; returns the seconds it took. RuntimeError after ``within`` s."""
    t0 = time.monotonic()
    if not poll_until(cond, within, step):
        raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}")
    return time.monotonic() - t0


async def wait_until(cond: Callable[[], bool], within: float, what: str, step: float = 0.05) -> None:
    """Poll ``cond`` every ``step`` s without blocking the loop; RuntimeError after ``within`` s."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(step)


async def settle(sample: Callable[[], int], within: float = 10.0, step: float = 0.1, stable: int = 3) -> int:
    """Sample until the value stops changing ``stable`` times in a row (or ``within`` s); returns it."""
    deadline = time.monotonic() + within
    last, same = sample(), 0
    while same < stable and time.monotonic() < deadline:
        await asyncio.sleep(step)
        now = sample()
        same = same + 1 if now == last else 0
        last = now
    return last


# -- percentiles -----------------------------------------------------------------------------------------


def pct(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank: index ``min(n - 1, int(q × n))``."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def pct_floor(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values at index ``int(q × (n - 1))``."""
    return sorted_values[int(q * (len(sorted_values) - 1))]


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99 (nearest rank) and max of durations in seconds, as milliseconds."""
    v = sorted(seconds)
    return {"p50_ms": pct(v, 0.5) * 1000, "p99_ms": pct(v, 0.99) * 1000, "max_ms": v[-1] * 1000}


# -- the event loop --------------------------------------------------------------------------------------


def run_loop(coro: Coroutine[Any, Any, T], loop: str = "uvloop", tag: str = "bench") -> T:
    """Run ``coro`` to completion on uvloop (``loop="uvloop"``, when installed) or asyncio."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - platforms without uvloop
            log("uvloop not installed: using asyncio", tag)
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)
