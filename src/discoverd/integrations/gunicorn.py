"""gunicorn integration: the master registers the server once; workers never register.

**One registration per listening address, not per process.** A registered instance is a server
endpoint that callers connect to, as kratos and bilibili/discovery have it: gunicorn's master
(the arbiter) binds the listening sockets and its workers only share them, so N workers are one
endpoint, not N instances. The master therefore registers in ``when_ready`` — once the sockets
listen, before the first worker is forked — and cancels in ``on_exit``; balancing across the
workers stays with the kernel, recycling a worker (``max_requests``, a crash, ``TTIN``/``TTOU``)
never touches the registry, and the instance lives as long as the master that accepts its
connections. Several ``bind`` addresses of one gunicorn are the addresses (``addrs``) of that one
instance, under this machine's hostname.

In ``gunicorn.conf.py``::

    from discoverd.integrations.gunicorn import hooks

    when_ready, on_exit = hooks(appid="shop.web", nodes=["10.0.0.1:7171"], env="prod")

The addresses registered are those gunicorn listens on (``http://``, ``https://`` with
``certfile``), a wildcard host (``0.0.0.0``, ``::``) replaced by this machine's outward IPv4
address, Unix sockets skipped; pass ``addrs`` to register others (behind a NAT or proxy).
``when_ready`` raises when the registry cannot be reached (``config.start_timeout``) or refuses:
gunicorn then stops, like a kratos service that cannot register.

The workers inherit nothing live: the client runs on a thread of the master, which a fork does not
copy, and this module acts only in the process that registered (its pid). A worker that exits,
however it exits, neither renews nor cancels the instance. Workers that need discovery run the
ASGI, aiohttp or Django integration, which default to discovery only under a master that
registered (the master exports ``DISCOVERD_MASTER_REGISTERED`` to its workers) — uvicorn workers
included:
``gunicorn -k uvicorn.workers.UvicornWorker -c gunicorn.conf.py app:app``. (``uvicorn --workers N``
has no master hook: there, register from the ASGI lifespan only with one worker.)

A ``HUP`` reload keeps the registration made at start-up. During a binary upgrade (``USR2``) the new
master registers the same instance, and an old master that exits after handing over stops renewing
without cancelling, so the instance is never missing.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from discoverd.client.config import ClientConfig
from discoverd.client.sync_client import Client, Registration
from discoverd.errors import ConfigError
from discoverd.integrations import _common

Hook = Callable[[Any], None]
"""A gunicorn server hook: called with the ``Arbiter`` (``server``)."""


class _Master:
    """The client and registration of this process as a gunicorn master (nothing elsewhere)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.client: Client | None = None
        self.registration: Registration | None = None

    def hold(self, client: Client, registration: Registration | None) -> None:
        with self.lock:
            self.pid, self.client, self.registration = os.getpid(), client, registration

    def close(self, *, handed_over: bool = False) -> bool:
        """Cancel (or, ``handed_over``, only stop renewing) and close; False (nothing done) outside
        the master that registered, and once done."""
        with self.lock:
            client, registration = self.client, self.registration
            mine = self.pid == os.getpid()
            self.forget()
        if client is None or not mine:
            return False
        if handed_over and registration is not None:
            registration.orphan()
        client.close()
        return True

    def forget(self) -> None:
        self.pid, self.client, self.registration = 0, None, None


_MASTER = _Master()
atexit.register(_MASTER.close)  # a master stopped without on_exit (e.g. an exception) still leaves


class _Hooks:
    def __init__(self, plan: _common.IntegrationPlan) -> None:
        self.plan = plan

    def when_ready(self, server: Any) -> None:
        """Register this server's listening addresses (gunicorn's ``when_ready`` hook)."""
        if _MASTER.client is not None:
            return
        plan = self.plan.with_addrs(self.plan.addrs or listening_urls(server))
        if not plan.addrs:
            raise ConfigError("gunicorn listens on no TCP address: pass addrs=[...] to hooks()")
        _MASTER.hold(*_common.start_sync(plan))
        os.environ[_common.MASTER_REGISTERED] = str(os.getpid())
        server.log.info("discoverd: registered %s at %s", plan.appid, ", ".join(plan.addrs))

    def on_exit(self, server: Any) -> None:
        """Cancel the registration (gunicorn's ``on_exit`` hook); after a ``USR2`` hand-over, only
        stop renewing it (the other master renews it)."""
        handed_over = bool(getattr(server, "reexec_pid", 0) or getattr(server, "master_pid", 0))
        if _MASTER.close(handed_over=handed_over):
            done = "stopped renewing (handed over)" if handed_over else "cancelled"
            server.log.info("discoverd: %s %s", done, self.plan.appid)


def hooks(
    appid: str | None = None,
    *,
    addrs: Iterable[str] | None = None,
    nodes: Sequence[str] | str | None = None,
    env: str | None = None,
    zone: str | None = None,
    region: str | None = None,
    hostname: str | None = None,
    metadata: dict[str, str] | None = None,
    version: str = "",
    config: ClientConfig | None = None,
) -> tuple[Hook, Hook]:
    """The ``(when_ready, on_exit)`` server hooks that register this gunicorn server.

    ``appid`` defaults to ``$APP_ID``; ``addrs`` to the addresses gunicorn listens on (see the
    module docstring); the client options and their environment defaults are
    :class:`~discoverd.client.sync_client.Client`'s; ``metadata`` and ``version`` are the
    instance's. Raises :class:`~discoverd.errors.ConfigError` without an appid.
    """
    plan = _common.plan(
        appid=appid,
        addrs=addrs,
        register=True,
        nodes=nodes,
        env=env,
        zone=zone,
        region=region,
        hostname=hostname,
        metadata=metadata,
        version=version,
        config=config,
    )
    master = _Hooks(plan)
    return master.when_ready, master.on_exit


def listening_urls(server: Any) -> list[str]:
    """The URLs of a gunicorn ``server``'s TCP listeners (``server.LISTENERS``), ``https`` when it
    serves TLS, wildcard hosts replaced by this machine's outward address."""
    scheme = "https" if getattr(server.cfg, "is_ssl", False) else "http"
    return _common.urls((listener.getsockname() for listener in server.LISTENERS), scheme)


def registration() -> Registration | None:
    """The registration this process holds as a gunicorn master; ``None`` anywhere else (in every
    worker, before ``when_ready`` and after ``on_exit``)."""
    return _MASTER.registration if _MASTER.pid == os.getpid() else None
