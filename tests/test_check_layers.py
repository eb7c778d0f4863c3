"""scripts/check_layers.py on small synthetic package trees: each rule finds its violation; a clean
tree passes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_layers.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_layers", module)  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


cl = _load()

#: A tree that follows every rule, with the shapes that must NOT be reported: ``from discoverd import
#: <submodule>``, relative imports, a package ``__init__`` importing its submodule, a submodule importing
#: its own package ``__init__`` (no cycle: the ``__init__`` does not import it back), third-party
#: libraries in their wrappers, the version from package metadata, function-local imports downwards.
CLEAN: dict[str, str] = {
    "__init__.py": "from discoverd.client.api import Client\nfrom discoverd.errors import Oops\n",
    "__main__.py": "import sys\n\nfrom discoverd import __version__\nfrom discoverd.cli import main\n",
    "errors.py": "class Oops(Exception):\n    pass\n",
    "jsoncodec.py": "from orjson import dumps, loads\n",
    "model.py": "from discoverd.errors import Oops\n",
    "config.py": "from discoverd import model\n",
    "core/__init__.py": "from discoverd.core.a import A\n",
    "core/a.py": "from discoverd import jsoncodec\nfrom discoverd.model import Oops\n\nA = 1\n",
    "core/b.py": (
        "from typing import TYPE_CHECKING\n\nfrom . import a\nfrom .a import A\n\n"
        "if TYPE_CHECKING:\n    from discoverd.config import model\n"
    ),
    "core/c.py": "import threading\n\nfrom discoverd.core import A\n",
    "core/gossip/__init__.py": "",
    "core/gossip/messages.py": "import msgpack\n\nfrom ..b import a\n",
    "core/gossip/keyring.py": "import os\n\nfrom cryptography.exceptions import InvalidTag\n",
    "calling/__init__.py": "",
    "calling/http.py": "import aiohttp\n",
    "calling/httpx_transport.py": "import httpx\n",
    "backends/__init__.py": "",
    "backends/redis_client.py": "import redis.asyncio as aioredis\nfrom redis.exceptions import RedisError\n",
    "backends/redis.py": "from discoverd.backends.redis_client import RedisError\n",
    "server/__init__.py": "",
    "server/http.py": "import asyncio\n\nimport httptools\n\nfrom discoverd.core import b\n",
    "server/metrics.py": (
        "import importlib.metadata\n\nfrom prometheus_client import Metric\n\n"
        'VERSION = importlib.metadata.version("discoverd")\n'
    ),
    "server/peer_http.py": "import aiohttp\n\nfrom discoverd.backends import redis\n",
    "server/runner.py": "def run() -> None:\n    import uvloop\n",
    "client/__init__.py": "",
    "client/api.py": "from discoverd.core.a import A\n\nclass Client:\n    pass\n",
    "client/transport.py": "from discoverd.calling.http import aiohttp\n",
    "cli.py": (
        "def main() -> None:\n"
        "    from discoverd.client import api\n"
        "    from discoverd.server.runner import run\n"
    ),
    "testing.py": "from discoverd.server import runner\n",
}


def make_tree(tmp_path: Path, changes: dict[str, str] | None = None) -> Path:
    """``CLEAN`` with ``changes`` applied, written under ``tmp_path/discoverd``; returns the package root."""
    root = tmp_path / "discoverd"
    for rel, text in {**CLEAN, **(changes or {})}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    rc = cl.main(["--root", str(root)])
    return rc, capsys.readouterr().out.splitlines()


def messages(root: Path) -> list[str]:
    return [f.message for f in cl.check(root).findings]


def test_clean_tree_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path)
    rc, out = run(root, capsys)
    assert out == [f"{len(CLEAN)} module(s), 21 import edge(s), 0 cycle(s), 0 finding(s)"]
    assert rc == 0


def test_upward_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path, {"core/up.py": "from discoverd.server.http import b\n"})
    rc, out = run(root, capsys)
    assert rc == 1
    assert out[0].endswith(
        "core/up.py:1: layer core must not import the upper layer server: "
        "discoverd.core.up imports discoverd.server.http (top level)"
    )
    assert out[-1].endswith("0 cycle(s), 1 finding(s)")


def test_server_and_client_never_import_each_other(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path, {"client/side.py": "def f() -> None:\n    from discoverd.server import http\n"}
    )
    assert messages(root) == [
        "client and server never import each other: discoverd.client.side imports discoverd.server.http"
    ]


def test_cycle_hidden_under_type_checking(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "core/p.py": "from discoverd.core.q import Q\n\nP = 1\n",
            "core/q.py": (
                "from typing import TYPE_CHECKING\n\n"
                "if TYPE_CHECKING:\n"
                "    from discoverd.core.p import P\n\n"
                "Q = 1\n"
            ),
        },
    )
    report = cl.check(root)
    assert report.cycles == [["discoverd.core.p", "discoverd.core.q"]]
    assert [f.message for f in report.findings] == [
        "import cycle among 2 modules [discoverd.core.p, discoverd.core.q]: "
        "discoverd.core.p → discoverd.core.q (line 1, top level); "
        "discoverd.core.q → discoverd.core.p (line 4, under TYPE_CHECKING)"
    ]


def test_cycle_through_function_local_relative_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        tmp_path,
        {
            "backends/x.py": "from . import y\n",
            "backends/y.py": "from .z import Z\n",
            "backends/z.py": "def f() -> None:\n    from discoverd.backends import x\n\nZ = 1\n",
        },
    )
    rc, out = run(root, capsys)
    assert rc == 1
    assert (
        "import cycle among 3 modules [discoverd.backends.x, discoverd.backends.y, discoverd.backends.z]"
        in out[0]
    )
    assert "discoverd.backends.z → discoverd.backends.x (line 2, in a function)" in out[0]
    assert out[-1].endswith("1 cycle(s), 1 finding(s)")


def test_package_init_counts_when_it_imports_back(tmp_path: Path) -> None:
    # core/c.py imports the core package's __init__ (``from discoverd.core import A``): a cycle once the
    # __init__ imports c.
    root = make_tree(
        tmp_path, {"core/__init__.py": "from discoverd.core.a import A\nfrom discoverd.core.c import C\n"}
    )
    assert cl.check(root).cycles == [["discoverd.core", "discoverd.core.c"]]


@pytest.mark.parametrize(
    "statement", ["from discoverd import __version__\n", "import discoverd\n", "from .. import Client\n"]
)
def test_package_root_imported_inside_server(tmp_path: Path, statement: str) -> None:
    root = make_tree(tmp_path, {"server/metrics.py": statement})
    found = messages(root)
    assert len(found) == 1
    assert found[0].startswith("discoverd.server.metrics (server) imports the package root")
    assert 'importlib.metadata.version("discoverd")' in found[0]


def test_third_party_outside_its_wrapper(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "core/a.py": "import orjson\n\nA = 1\n",
            "core/gossip/framing.py": "from msgpack import OutOfData\n",
            "backends/redis.py": "from redis.exceptions import RedisError\n",
            "client/api.py": "import aiohttp\n\nclass Client:\n    pass\n",
        },
    )
    assert messages(root) == [
        "redis is wrapped by discoverd.backends.redis_client; discoverd.backends.redis imports it directly "
        "(from redis.exceptions import RedisError)",
        "aiohttp is wrapped by discoverd.calling.http and discoverd.integrations.aiohttp and "
        "discoverd.server.peer_http; discoverd.client.api imports it directly (import aiohttp)",
        "orjson is wrapped by discoverd.jsoncodec; discoverd.core.a imports it directly (import orjson)",
        "msgpack is wrapped by discoverd.core.gossip.messages; discoverd.core.gossip.framing imports it "
        "directly (from msgpack import OutOfData)",
    ]


def test_unlisted_third_party_library(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"server/http.py": "import httptools\nimport requests.adapters\n"})
    assert messages(root) == [
        "unlisted third-party library requests (import requests.adapters): add it to WRAPPERS with the one "
        "module that wraps it"
    ]


def test_core_imports_no_io_module(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"core/gossip/timer.py": "import time\nfrom asyncio import sleep\n"})
    assert messages(root) == [
        "core must stay I/O-free but imports time",
        "core must stay I/O-free but imports asyncio",
    ]


def test_module_outside_every_layer(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"plugins/__init__.py": ""})
    (found,) = messages(root)
    assert found.startswith("discoverd.plugins is in no layer: add 'plugins' to RANK in ")


def test_tarjan_components() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}, "g": set()}
    assert cl.strongly_connected(graph) == [["a", "b", "c"], ["d", "e"]]


@pytest.mark.parametrize(
    "source",
    [
        "def install(app: object) -> None:\n    app.hook = lambda: None  # type: ignore[attr-defined]\n",
        "def handler() -> None:\n    pass\n\n\ndef install(app: object) -> None:\n"
        "    app.handler = handler  # type: ignore[attr-defined]\n",
        "class Wiring:\n    def on(self) -> None:\n        pass\n\n"
        "    def wire(self, http: object) -> None:\n"
        "        http.handler = self.on  # type: ignore[attr-defined]\n",
    ],
    ids=["lambda", "module-function", "bound-method"],
)
def test_assigning_a_function_to_another_objects_attribute(tmp_path: Path, source: str) -> None:
    root = make_tree(tmp_path, {"server/patch.py": source})
    found = messages(root)
    assert len(found) == 1 and found[0].startswith("assigns a function to another object's attribute: ")


def test_method_assign_ignore_is_reported(tmp_path: Path) -> None:
    source = "def wrap(app: object) -> None:\n    app.evict = app.evict  # type: ignore[method-assign]\n"
    root = make_tree(tmp_path, {"server/wrap.py": source})
    assert "replaces a method (type: ignore[method-assign])" in messages(root)


def test_data_assigned_to_other_objects_is_not_patching(tmp_path: Path) -> None:
    source = (
        "class Holder:\n    def __init__(self) -> None:\n        self.epoch = 1\n\n"
        "    def mark(self, entry: object) -> None:\n"
        "        entry.epoch = self.epoch  # type: ignore[attr-defined]\n"
    )
    root = make_tree(tmp_path, {"server/data.py": source})
    assert messages(root) == []


def test_calling_sits_between_core_and_backends(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "backends/calls.py": "from discoverd.calling import http\n",
            "calling/up.py": "from discoverd.backends import redis\n",
        },
    )
    assert messages(root) == [
        "layer calling must not import the upper layer backends: discoverd.calling.up imports "
        "discoverd.backends.redis (top level)"
    ]


def test_grpc_and_the_generated_messages_have_one_wrapper_on_each_side(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "grpc.py": "def channel() -> None:\n    import grpc\n",
            "server/xds/__init__.py": "",
            "server/xds/server.py": "import grpc\n",
            "server/xds/protos.py": (
                "from envoy.config import listener_pb2\nfrom google.protobuf import any_pb2\n"
            ),
            "server/xds/streams.py": "import grpc\nfrom envoy.config import listener_pb2\n",
            "client/calls.py": "from discoverd import grpc\n",
        },
    )
    assert messages(root) == [
        "grpc is wrapped by discoverd.grpc and discoverd.server.xds.server; discoverd.server.xds.streams "
        "imports it directly (import grpc)",
        "envoy is wrapped by discoverd.server.xds.protos; discoverd.server.xds.streams imports it directly "
        "(from envoy.config import listener_pb2)",
    ]
