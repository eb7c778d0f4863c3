"""A 3-node cluster of real server processes on loopback ports, and small HTTP helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest

from discoverd.testing import ServerProcess

BASE = ["--env", "dev", "--zone", "sh001", "--protect-threshold", "0.01"]


def get(addr: str, path: str, **params: str) -> Any:
    query = f"?{urlencode(params)}" if params else ""
    with urlopen(f"http://{addr}/discovery/{path}{query}", timeout=5) as r:
        return json.loads(r.read())


def post(addr: str, path: str, params: list[tuple[str, str]] | dict[str, str]) -> Any:
    with urlopen(f"http://{addr}/discovery/{path}", data=urlencode(params).encode(), timeout=5) as r:
        return json.loads(r.read())


def register(addr: str, hostname: str, appid: str = "svc", **extra: str) -> Any:
    params = {"zone": "sh001", "env": "dev", "appid": appid, "hostname": hostname, "status": "1"}
    params["addrs"] = f"http://10.0.0.1:{1000 + len(hostname)}"
    return post(addr, "register", {**params, **extra})


def hosts(addr: str, appid: str = "svc") -> list[str]:
    try:
        data = get(addr, "fetch", env="dev", appid=appid, status="3")
    except (URLError, OSError):
        return ["<unreachable>"]
    if data["code"] != 0:
        return []
    return sorted(i["hostname"] for z in data["data"]["instances"].values() for i in z)


def eventually(check: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Cluster:
    """Nodes A, B, C: B lists A, C lists A and B; A learns B and C through infra.discovery."""

    def __init__(self, stack: ExitStack, extra: list[str]) -> None:
        self.stack = stack
        self.extra = extra
        self.a = stack.enter_context(ServerProcess(["--hostname", "A", *BASE, *extra]))
        self.b = stack.enter_context(
            ServerProcess(["--hostname", "B", "--nodes", self.a.addr, *BASE, *extra])
        )
        self.c = stack.enter_context(
            ServerProcess(["--hostname", "C", "--nodes", f"{self.a.addr},{self.b.addr}", *BASE, *extra])
        )
        every = [self.a.addr, self.b.addr, self.c.addr]
        eventually(
            lambda: all(sorted(n["addr"] for n in get(x, "nodes")["data"]) == sorted(every) for x in every),
            what="every node knows the others",
        )

    @property
    def addrs(self) -> list[str]:
        return [self.a.addr, self.b.addr, self.c.addr]

    def restart_b(self, *args: str) -> ServerProcess:
        self.b = self.stack.enter_context(
            ServerProcess(
                ["--hostname", "B", "--nodes", self.a.addr, *BASE, *self.extra, *args], addr=self.b.addr
            )
        )
        return self.b


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(stack, [])
