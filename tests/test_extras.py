"""Optional dependencies: a missing extra is named in the error, and nothing optional loads unasked.

Each case runs a fresh interpreter in which one library is made unimportable — a ``sys.meta_path``
finder inserted before ``discoverd`` is imported raises ``ModuleNotFoundError`` for it and its
submodules, as an interpreter without the package does — and checks that the feature needing it
raises :class:`~discoverd.errors.MissingExtra` naming the extra (``pip install 'discoverd[...]'``).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

#: Imported first by every child: makes the libraries in BLOCKED unimportable.
BLOCKER = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {blocked!r}


class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""

#: Runs the feature's code and prints what it raised as one JSON line.
REPORT = """
import json
from discoverd.errors import MissingExtra

try:
{code}
except MissingExtra as exc:
    print(json.dumps({{"raised": "MissingExtra", "extra": exc.extra, "library": exc.library,
                       "import_error": isinstance(exc, ImportError), "message": str(exc)}}))
except BaseException as exc:
    print(json.dumps({{"raised": type(exc).__name__, "message": str(exc)}}))
else:
    print(json.dumps({{"raised": None}}))
"""

OPTIONAL = (
    "msgpack",
    "cryptography",
    "redis",
    "httptools",
    "uvloop",
    "prometheus_client",
    "grpc",
    "google.protobuf",
    "envoy",
    "httpx",
)


def child(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    source = BLOCKER.format(blocked=set(blocked)) + code
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, check=False
    )


def raised(blocked: str, code: str) -> dict[str, object]:
    """What ``code`` (statements) raises in an interpreter without ``blocked``."""
    body = "\n".join("    " + line for line in code.strip().splitlines())
    out = child((blocked,), REPORT.format(code=body))
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


CASES = [
    # (blocked library, its extra, the library named, code using the feature)
    (
        "msgpack",
        "gossip",
        "msgpack",
        "from discoverd import open_registry\nopen_registry('gossip://127.0.0.1:0')",
    ),
    (
        "cryptography",
        "gossip",
        "cryptography",
        "from discoverd import open_registry\nopen_registry('gossip://127.0.0.1:0')",
    ),
    (
        "redis",
        "redis",
        "redis",
        "from discoverd import open_registry\nopen_registry('redis://127.0.0.1:6379')",
    ),
    ("httptools", "server", "httptools", "import discoverd.server.runner"),
    ("prometheus_client", "server", "prometheus_client", "import discoverd.server.metrics"),
    ("grpc", "grpc", "grpcio", "import discoverd.server.xds.server"),
    (
        "grpc",
        "grpc",
        "grpcio",
        "from discoverd.grpc import bootstrap, channel\n"
        "channel('app', bootstrap=bootstrap('127.0.0.1:1', env='dev', zone='z1'))",
    ),
    ("envoy", "grpc", "xds-protos", "import discoverd.server.xds.protos"),
    ("google.protobuf", "grpc", "protobuf", "import discoverd.server.xds.protos"),
    ("httpx", "httpx", "httpx", "from discoverd.calling.httpx_transport import DiscoverdTransport"),
]


@pytest.mark.parametrize(
    ("blocked", "extra", "library", "code"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_a_missing_library_names_its_extra(blocked: str, extra: str, library: str, code: str) -> None:
    got = raised(blocked, code)
    assert got["raised"] == "MissingExtra", got
    assert got["import_error"] is True  # still an ImportError for code that catches those
    assert got["extra"] == extra
    assert got["library"] == library
    assert f"pip install 'discoverd[{extra}]'" in str(got["message"])


def test_the_memory_registry_needs_no_extra() -> None:
    got = raised(
        "redis",
        "import asyncio\nfrom discoverd import open_registry\n"
        "async def use():\n"
        "    async with open_registry('memory://') as r:\n"
        "        pass\n"
        "asyncio.run(use())",
    )
    assert got["raised"] is None, got


SERVE = "import sys\nfrom discoverd.cli import main\nsys.exit(main({argv!r}))\n"


@pytest.mark.parametrize(
    ("blocked", "extra", "flags"),
    [
        ("httptools", "server", []),
        ("prometheus_client", "server", []),
        ("grpc", "grpc", ["--xds", "127.0.0.1:0"]),
    ],
)
def test_serve_without_its_extra_says_so_and_exits_1(blocked: str, extra: str, flags: list[str]) -> None:
    argv = ["serve", "--addr", "127.0.0.1:0", "--log-level", "error", *flags]
    out = child((blocked,), SERVE.format(argv=argv))
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("discoverd: ")
    assert f"pip install 'discoverd[{extra}]'" in lines[0]
    assert "listening" not in out.stdout


def test_serve_without_uvloop_runs_on_asyncio() -> None:
    """uvloop is optional even within [server]: the node serves on asyncio's loop, saying nothing."""
    argv = ["serve", "--addr", "127.0.0.1:0", "--log-level", "warning"]
    source = BLOCKER.format(blocked={"uvloop"}) + SERVE.format(argv=argv)
    proc = subprocess.Popen(
        [sys.executable, "-c", source],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = _first_line(proc, within=30.0)
        assert line.startswith(b"discoverd listening on "), line
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"uvloop" not in err and b"Traceback" not in err


def _first_line(proc: subprocess.Popen[bytes], within: float) -> bytes:
    """The child's first stdout line, read without blocking past ``within`` seconds."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + within
    line = b""
    try:
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    finally:
        sel.close()
    return line


#: Prints the third-party top-level packages ``code`` loaded (the standard library and discoverd aside).
LOADED = """
import sys
before = set(sys.modules)
{code}
new = {{m.partition(".")[0] for m in set(sys.modules) - before}}
print(" ".join(sorted(new - set(sys.stdlib_module_names) - {{"discoverd"}})))
"""


def loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", LOADED.format(code=code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(out.stdout.split())


def test_import_discoverd_loads_no_third_party_library() -> None:
    assert loaded_by("import discoverd") == set()


def test_the_client_sdk_and_the_memory_registry_load_no_optional_library() -> None:
    loaded = loaded_by(
        "import asyncio\n"
        "import discoverd\n"
        "from discoverd import AsyncClient, CachedRegistry, Client, Instance, make_balancer, open_registry\n"
        "async def use():\n"
        "    async with open_registry('memory://') as r:\n"
        "        await r.register(Instance(appid='a', hostname='h', addrs=['http://127.0.0.1:1'],"
        " env='dev', zone='z'), ttl=30)\n"
        "        assert [i.hostname for i in await r.get_service('a')] == ['h']\n"
        "asyncio.run(use())"
    )
    optional = {name.partition(".")[0] for name in OPTIONAL}
    assert loaded & optional == set(), loaded
