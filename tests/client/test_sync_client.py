"""The synchronous facade: plain threads, watch as an iterator, and a fork (preforking servers)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from discoverd import Unavailable
from discoverd.client.config import ClientConfig
from discoverd.client.sync_client import Client
from discoverd.testing import ServerProcess

FAST = ClientConfig(
    renew_interval=0.3, request_timeout=2.0, start_timeout=3.0, backoff_base=0.05, backoff_cap=0.2
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(["--hostname", "sync-node", "--env", "dev", "--zone", "sh001"]) as srv:
        yield srv


def make(server: ServerProcess, host: str) -> Client:
    return Client([server.addr], env="dev", zone="sh001", hostname=host, config=FAST)


def test_register_fetch_watch_close(server: ServerProcess) -> None:
    with make(server, "prov") as prov, make(server, "cons") as cons:
        reg = prov.register("sync.svc", ["http://10.0.0.1:80"], metadata={"weight": "3"})
        assert [i.hostname for i in cons.fetch("sync.svc")] == ["prov"]
        watch = cons.watch("sync.svc", timeout=5)
        assert [i.hostname for i in next(watch)] == ["prov"]
        reg.set(status=2)
        assert next(watch) == []
        watch.close()
        reg.close()
        assert cons.fetch("sync.svc", status=3) == []


def test_many_threads_share_one_client(server: ServerProcess) -> None:
    errors: list[BaseException] = []
    with make(server, "threads") as c:

        def work(n: int) -> None:
            try:
                reg = c.register("thr.svc", [f"http://10.0.1.{n}:80"], hostname=f"t{n}")
                assert any(i.hostname == f"t{n}" for i in c.fetch("thr.svc", status=3))
                reg.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []


def test_constructor_raises_instead_of_hanging() -> None:
    with pytest.raises(Unavailable):
        Client(["127.0.0.1:9"], env="dev", config=FAST.replace(start_timeout=0.3))


def test_forked_child_gets_a_working_client(server: ServerProcess) -> None:
    with make(server, "parent") as c:
        c.register("fork.svc", ["http://10.0.0.1:80"], hostname="parent-inst")
        assert [i.hostname for i in c.fetch("fork.svc")] == ["parent-inst"]
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report through the pipe, never return into pytest
            status = 1
            try:
                os.close(read_fd)
                hosts = sorted(i.hostname for i in c.fetch("fork.svc"))
                reg = c.register("fork.child", ["http://10.0.0.2:80"], hostname="child-inst")
                seen = [i.hostname for i in c.fetch("fork.child", status=3)]
                reg.close()
                os.write(write_fd, f"{','.join(hosts)}|{','.join(seen)}".encode())
                c.close()
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        _, wait_status = os.waitpid(pid, 0)
        with os.fdopen(read_fd) as pipe:
            report = pipe.read()
        assert os.waitstatus_to_exitcode(wait_status) == 0, report
        assert report == "parent-inst|child-inst"
        # the child's exit orphaned (not cancelled) the registration it inherited
        assert [i.hostname for i in c.fetch("fork.svc", status=3)] == ["parent-inst"]
