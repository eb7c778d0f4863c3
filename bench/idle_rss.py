"""Idle memory of ``discoverd serve`` with default flags: VmRSS, RssAnon, RssFile, what is loaded.

For each run it starts ``discoverd serve --addr 127.0.0.1:0`` (every other flag at its default; the
console script next to this interpreter, else ``python -m discoverd``), waits until ``GET /health``
answers 200 and VmRSS stops moving (``--settle-samples`` equal samples ``--interval`` apart, within
``--settle-timeout`` seconds: no blind sleep), reads ``/proc/PID/status`` and stops the server by its
PID (SIGTERM, SIGKILL after 10 s). It prints, per run and then the median:

* **idle** — VmRSS, RssAnon, RssFile of the settled server;
* **after one scrape** — the same once ``/metrics`` and the dashboard's state were each asked for once
  (what is loaded on first use: prometheus_client, importlib.metadata) and VmRSS settled again;
* **largest mappings** — RSS per mapping of the idle server (``/proc/PID/smaps``): the interpreter,
  OpenSSL, uvloop, the heap, anonymous memory (pymalloc arenas, libraries' data);
* **loaded packages** — the third-party top-level packages in ``sys.modules`` of the serving process.
  They come from a second server started the same way through ``python -c``: a wrapper that calls
  ``discoverd.cli.main(["serve", ...])`` — what the console script calls — with a thread that prints
  ``sys.modules`` when this script writes a line to its stdin (after ``/health`` answered). Its
  memory is not measured (the wrapper's thread is its only addition).

``--breakdown`` adds where the memory goes: VmRSS of fresh interpreters importing, cumulatively, what
the serve path imports (the interpreter alone; asyncio, which loads ssl and OpenSSL; uvloop; orjson;
httptools; the CLI; every server module), the rest of the settled figure being the running node.

``--go 'CMD ...' --go-addr HOST:PORT`` measures the Go server the same way (started from ``CMD``, ready
when ``HOST:PORT`` answers any HTTP request, e.g. bilibili/discovery with its ``-conf`` file).

Usage: ``.venv/bin/python bench/idle_rss.py [--runs 3] [--breakdown] [--go CMD --go-addr HOST:PORT]``.
Target: idle VmRSS ≤ 35 MB. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

TARGET_MB = 35.0
FIELDS = ("VmRSS", "RssAnon", "RssFile")
SERVE_ARGS = ("serve", "--addr", "127.0.0.1:0")

#: The wrapper of the module-list instance: the CLI's main in the main thread, a reporter thread.
WRAPPER = """
import sys, threading

def report():
    sys.stdin.readline()  # the benchmark asks once /health answered
    names = set(sys.modules)
    ours = set(sys.stdlib_module_names) | {"__main__", "discoverd"}
    top = sorted({n.partition(".")[0] for n in names} - ours)
    print("MODULES", len(names), " ".join(top), flush=True)

threading.Thread(target=report, daemon=True).start()
from discoverd.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: Cumulative import steps of ``--breakdown``, in the order the serve path meets them.
STEPS: tuple[tuple[str, str], ...] = (
    ("interpreter (python -c pass)", "pass"),
    ("+ ssl (OpenSSL; asyncio imports it)", "import ssl"),
    ("+ asyncio", "import asyncio"),
    ("+ uvloop", "import uvloop"),
    ("+ orjson", "import orjson"),
    ("+ httptools", "import httptools"),
    ("+ the CLI (argparse, config, dataclasses)", "import discoverd.cli; discoverd.cli._parser()"),
    (
        "+ every server module of the default node",
        "import discoverd.server.runner, discoverd.server.auth, discoverd.server.logs",
    ),
)


@dataclass
class Sample:
    kb: dict[str, int]

    def mb(self, field: str) -> float:
        return self.kb[field] / 1024


def status(pid: int) -> Sample:
    """VmRSS, RssAnon, RssFile of ``pid`` in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in FIELDS:
                out[name] = int(rest.split()[0])
    return Sample(out)


def settle(pid: int, *, samples: int, interval: float, timeout: float) -> tuple[Sample, bool]:
    """Sample VmRSS until ``samples`` consecutive readings are equal (True), or ``timeout`` (False)."""
    deadline = time.monotonic() + timeout
    last, same = status(pid), 1
    while same < samples:
        if time.monotonic() >= deadline:
            return last, False
        time.sleep(interval)
        now = status(pid)
        same = same + 1 if now.kb["VmRSS"] == last.kb["VmRSS"] else 1
        last = now
    return last, True


def get(addr: str, path: str, timeout: float = 2.0) -> int:
    """The status of ``GET path`` on ``addr`` (HOST:PORT)."""
    host, _, port = addr.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_answering(addr: str, path: str, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    """Until ``GET path`` gets any HTTP answer (``/health``: must be 200)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            code = get(addr, path)
            if path != "/health" or code == 200:
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{addr}{path} did not answer within {timeout:g} s")
        time.sleep(0.05)


def discoverd_command() -> list[str]:
    script = shutil.which("discoverd", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "discoverd"]


def start(cmd: Sequence[str], *, stdin: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd``; the address from its ``discoverd listening on HOST:PORT`` line."""
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("discoverd listening on "):
        stop(proc)
        raise RuntimeError(f"{shlex.join(cmd)}: unexpected first line {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM by PID, SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def mappings(pid: int, top: int = 8) -> list[tuple[int, str]]:
    """The ``top`` mappings by RSS (kB), named by file, ``[heap]``, or ``anonymous``."""
    rss: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=5)
            if len(first) >= 5 and "-" in first[0] and ":" not in first[0]:
                name = first[5].strip() if len(first) == 6 else "anonymous"
            elif line.startswith("Rss:"):
                rss[name] = rss.get(name, 0) + int(line.split()[1])
    return sorted(((kb, n) for n, kb in rss.items()), reverse=True)[:top]


@dataclass
class Run:
    idle: Sample
    settled: bool
    touched: Sample
    maps: list[tuple[int, str]]


def measure_discoverd(args: argparse.Namespace) -> Run:
    proc, addr = start([*discoverd_command(), *SERVE_ARGS])
    try:
        wait_answering(addr, "/health", proc)
        idle, settled = settle(
            proc.pid, samples=args.settle_samples, interval=args.interval, timeout=args.settle_timeout
        )
        maps = mappings(proc.pid)
        get(addr, "/metrics")
        get(addr, "/dashboard/api/state")
        touched, _ = settle(
            proc.pid, samples=args.settle_samples, interval=args.interval, timeout=args.settle_timeout
        )
        return Run(idle, settled, touched, maps)
    finally:
        stop(proc)


def loaded_packages() -> tuple[int, list[str]]:
    """Module count and third-party top-level packages of a serving process (the wrapper instance)."""
    proc, addr = start([sys.executable, "-c", WRAPPER, *SERVE_ARGS], stdin=True)
    try:
        wait_answering(addr, "/health", proc)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("report\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if line.startswith("MODULES "):
                _, count, *names = line.split()
                return int(count), names
        raise RuntimeError("the wrapper instance printed no module list")
    finally:
        stop(proc)


def breakdown() -> list[tuple[str, float]]:
    """VmRSS (MB) of fresh interpreters importing the serve path's parts cumulatively."""
    out, code = [], ""
    for label, statement in STEPS:
        code += statement + "\n"
        probe = code + "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')))"
        kb = int(
            subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
        )
        out.append((label, kb / 1024))
    return out


def measure_go(cmd: str, addr: str, args: argparse.Namespace) -> Sample:
    proc = subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_answering(addr, "/discovery/nodes", proc)
        sample, _ = settle(
            proc.pid, samples=args.settle_samples, interval=args.interval, timeout=args.settle_timeout
        )
        return sample
    finally:
        stop(proc)


def row(label: str, s: Sample) -> str:
    return f"{label:<22}" + "".join(f"  {f} {s.mb(f):6.1f} MB" for f in FIELDS)


def median(samples: Sequence[Sample]) -> Sample:
    return Sample({f: int(statistics.median(s.kb[f] for s in samples)) for f in FIELDS})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=3, help="servers started one after the other (3)")
    p.add_argument("--settle-samples", type=int, default=10, help="equal VmRSS samples that mean settled")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between samples (0.1)")
    p.add_argument("--settle-timeout", type=float, default=15.0, help="seconds to settle at most (15)")
    p.add_argument("--breakdown", action="store_true", help="also: VmRSS of the serve path's imports")
    p.add_argument("--go", metavar="CMD", help="also measure this Go server command line")
    p.add_argument("--go-addr", metavar="HOST:PORT", help="where the Go server answers HTTP")
    args = p.parse_args(argv)
    if args.go and not args.go_addr:
        p.error("--go needs --go-addr")

    runs = []
    for i in range(args.runs):
        run = measure_discoverd(args)
        runs.append(run)
        note = "" if run.settled else "  (did not settle: last sample)"
        print(row(f"discoverd run {i + 1}", run.idle) + note, flush=True)
    idle = median([r.idle for r in runs])
    print(row("discoverd median", idle))
    print(row("after one scrape", median([r.touched for r in runs])) + "  (/metrics, dashboard state)")
    verdict = "within" if idle.mb("VmRSS") <= TARGET_MB else "ABOVE"
    print(f"idle VmRSS {idle.mb('VmRSS'):.1f} MB: {verdict} the {TARGET_MB:g} MB target")

    print("largest mappings of the idle server (RSS):")
    for kb, name in runs[-1].maps:
        print(f"  {kb / 1024:6.1f} MB  {name}")

    count, packages = loaded_packages()
    print(f"loaded: {count} modules; third-party packages: {' '.join(packages) or 'none'}")

    if args.breakdown:
        print("cumulative imports of the serve path, fresh interpreters (VmRSS):")
        before = 0.0
        for label, mb in breakdown():
            print(f"  {mb:6.1f} MB  (+{mb - before:4.1f})  {label}")
            before = mb
        print(f"  {idle.mb('VmRSS'):6.1f} MB  (+{idle.mb('VmRSS') - before:4.1f})  the running node, settled")

    if args.go:
        print(row("go server", measure_go(args.go, args.go_addr, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
