"""The public API: the pinned top-level names, the deprecated ones, and a user program that uses them."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import discoverd
from discoverd.backends.base import Registry as RegistryInModule
from discoverd.client.sync_client import Registration as SyncRegistrationClass
from discoverd.model import Instance
from discoverd.server.runner import Node
from tests.public_api import user_program

PUBLIC = [
    "Action",
    "AsyncCaller",
    "AsyncClient",
    "AsyncRegistration",
    "Balancer",
    "CachedRegistry",
    "CallFailed",
    "CallResult",
    "CalleeConfig",
    "Caller",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "DiscoverdError",
    "Event",
    "Instance",
    "NoInstance",
    "NotFound",
    "Registration",
    "Registry",
    "RegistryClosed",
    "Status",
    "SyncRegistry",
    "Unavailable",
    "__version__",
    "make_balancer",
    "open_registry",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert discoverd.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(discoverd, name) is not None, name
    assert set(dir(discoverd)) >= set(PUBLIC)
    assert discoverd.Registry is RegistryInModule
    assert discoverd.Registration is SyncRegistrationClass


def test_every_public_name_is_documented() -> None:
    for name in PUBLIC:
        if name == "__version__":
            continue
        doc = getattr(discoverd, name).__doc__
        assert doc and doc.strip(), f"discoverd.{name} has no docstring"
        assert f":class:`{name}`" in discoverd.__doc__ or f":func:`{name}`" in discoverd.__doc__, name


def test_version_comes_from_the_package_metadata() -> None:
    assert discoverd.__version__ == importlib.metadata.version("discoverd")


@pytest.mark.parametrize(
    ("old", "replacement"),
    [("UP", "discoverd.Status.UP"), ("SyncRegistration", "discoverd.Registration"), ("Route", "CallRoute")],
)
def test_old_names_warn_and_still_work(old: str, replacement: str) -> None:
    with pytest.warns(DeprecationWarning, match=replacement):
        value = getattr(discoverd, old)
    assert value is not None


def test_old_names_resolve_to_the_new_objects() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert getattr(discoverd, "UP") is discoverd.Status.UP and int(discoverd.Status.UP) == 1  # noqa: B009
        assert getattr(discoverd, "ALL") is discoverd.Status.ALL and int(discoverd.Status.ALL) == 3  # noqa: B009
        assert getattr(discoverd, "SyncRegistration") is discoverd.Registration  # noqa: B009


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(discoverd, "Nope")  # noqa: B009


def test_the_old_module_homes_warn() -> None:
    code = "import discoverd.client.caller as m; print(m.AsyncCaller.__module__)"
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "discoverd.calling.caller" in out.stderr


def test_the_user_program_imports_only_top_level_names() -> None:
    tree = ast.parse(Path(user_program.__file__).read_text())
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    modules = {n.module for n in imported if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in imported if isinstance(n, ast.Import) for a in n.names}
    assert modules == {"__future__", "discoverd"}
    names = {
        a.name for n in imported if isinstance(n, ast.ImportFrom) and n.module == "discoverd" for a in n.names
    }
    assert names <= set(PUBLIC) and len(names) >= 12
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _on_discoverd(n)}
    assert attrs <= set(PUBLIC)


def _on_discoverd(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "discoverd"


async def test_the_user_program_runs_against_a_node(node: Node) -> None:
    nodes = [node.address]
    up, still_up = await user_program.provide_and_consume(nodes)
    assert up == ["http://10.0.0.1:8000"] and still_up == []
    assert await asyncio.to_thread(user_program.sync_client_fetch, nodes) == 1


async def test_the_user_program_uses_the_registry_interface() -> None:
    assert await user_program.watch_memory_registry() == ["create", "delete"]
    assert await asyncio.to_thread(user_program.sync_registry_services) == ["demo.svc"]
    hosts = [user_program.instance("a", f"h{i}", i) for i in range(3)]
    assert user_program.balance(hosts) in {"h0", "h1", "h2"}
    assert user_program.classify(discoverd.NotFound("x")) == "not found"
    assert user_program.classify(discoverd.NoInstance("x")) == "no instance"
    assert user_program.classify(discoverd.Unavailable("x")) == "discoverd"
    assert user_program.classify(ValueError()) == "other"
    assert user_program.version() == importlib.metadata.version("discoverd")
    assert isinstance(hosts[0], Instance)
