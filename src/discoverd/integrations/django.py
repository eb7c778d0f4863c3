"""Django integration: the synchronous client, started from an ``AppConfig.ready()``.

The recipe, in one of the project's apps (``shop/apps.py``)::

    from django.apps import AppConfig
    from django.conf import settings

    from discoverd.integrations import django as discoverd_django


    class ShopConfig(AppConfig):
        name = "shop"

        def ready(self) -> None:
            discoverd_django.start(**settings.DISCOVERD)  # appid=..., addrs=[...], nodes=...

and in views ``discoverd_django.get_client().fetch("pay.svc")`` (or ``.caller()``). Options and
their environment defaults are those of :func:`discoverd.integrations.asgi.lifespan`.

What :func:`start` guarantees:

* **once per process**: the first call counts; Django calling ``ready()`` again changes nothing;
* **only a serving process registers** (``register=None``, see :func:`serving`): not the
  autoreloader process of ``runserver`` (it only watches files and restarts the server process, which
  registers), not ``migrate``, ``shell``, ``test`` and the other management commands, not a worker
  of a gunicorn master that registered (:mod:`discoverd.integrations.gunicorn`). Those processes
  start a discovery-only client on the first :func:`get_client` call instead;
* **cancelled at exit**: :func:`stop` runs at interpreter exit (``atexit``: a normal exit, ``sys.exit``,
  ``SIGINT``, or a server's graceful ``SIGTERM`` handler) and cancels the registration;
* **fork children register nothing**: a process forked after :func:`start` (gunicorn's
  ``preload_app``) gets its own discovery-only client; the registration stays the parent's.

Under gunicorn, register with the gunicorn hooks and let Django discover only
(``register=False``; with ``preload_app`` it is required, as ``ready()`` then runs before the hooks).

This module does not import Django.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Iterable, Sequence

from discoverd.client.config import ClientConfig
from discoverd.client.sync_client import Client, Registration
from discoverd.errors import DiscoverdError
from discoverd.integrations import _common

RELOADER_ENV = "RUN_MAIN"
"""Set to ``"true"`` by Django's autoreloader in the server process it starts and restarts."""

_MANAGE = frozenset({"manage.py", "django-admin", "django-admin.py"})


class _Process:
    """The client of this process (a fork child starts over) and its registration."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.plan: _common.IntegrationPlan | None = None
        self.pid = 0
        self.client: Client | None = None
        self.registration: Registration | None = None
        self.at_exit = False

    def mine(self) -> bool:
        return self.pid == os.getpid()

    def adopt(self, client: Client, registration: Registration | None) -> None:
        self.pid, self.client, self.registration = os.getpid(), client, registration
        if not self.at_exit:
            atexit.register(stop)
            self.at_exit = True


_PROCESS = _Process()


def start(
    appid: str | None = None,
    addrs: Iterable[str] | None = None,
    *,
    register: bool | None = None,
    nodes: Sequence[str] | str | None = None,
    env: str | None = None,
    zone: str | None = None,
    region: str | None = None,
    hostname: str | None = None,
    metadata: dict[str, str] | None = None,
    version: str = "",
    config: ClientConfig | None = None,
) -> Registration | None:
    """Configure this process's client and, when it registers, start it and register now.

    ``register`` — ``True``: register (``addrs`` required); ``False``: discovery only; ``None``
    (default): register when :func:`serving` and no gunicorn master registered this server.
    Returns the registration, or ``None`` when this process does not register. Only the first call
    of a process counts (later ones return its result). Raises
    :class:`~discoverd.errors.ConfigError` for a registration without appid or addresses, and the
    client's :class:`~discoverd.errors.Unavailable` when no registry node answered.
    """
    with _PROCESS.lock:
        if _PROCESS.plan is not None:
            return _PROCESS.registration if _PROCESS.mine() else None
        if register is None:
            register = serving() and not _common.master_registered()
        plan = _common.plan(
            appid=appid,
            addrs=addrs,
            register=register,
            nodes=nodes,
            env=env,
            zone=zone,
            region=region,
            hostname=hostname,
            metadata=metadata,
            version=version,
            config=config,
        )
        _common.require_addrs(plan)
        if plan.register:
            _PROCESS.adopt(*_common.start_sync(plan))
        _PROCESS.plan = plan
        return _PROCESS.registration


def get_client() -> Client:
    """This process's client: the one :func:`start` registered with, else a discovery-only client
    started on the first call (also in a fork child). Raises
    :class:`~discoverd.errors.DiscoverdError` before :func:`start`."""
    with _PROCESS.lock:
        if _PROCESS.client is not None and _PROCESS.mine():
            return _PROCESS.client
        if _PROCESS.plan is None:
            raise DiscoverdError("discoverd.integrations.django.start() was not called (AppConfig.ready)")
        client, _ = _common.start_sync(_PROCESS.plan.with_register(False))
        _PROCESS.adopt(client, None)
        return client


def stop() -> None:
    """Cancel this process's registration and close its client (run at exit). Idempotent; a
    client inherited over a fork is left to its process."""
    with _PROCESS.lock:
        client = _PROCESS.client if _PROCESS.mine() else None
        _PROCESS.pid, _PROCESS.client, _PROCESS.registration = 0, None, None
    if client is not None:
        client.close()


def serving(argv: Sequence[str] | None = None) -> bool:
    """Whether this process serves requests, judged from ``argv`` (default ``sys.argv``).

    False for a management command (``manage.py``, ``django-admin``, ``python -m django``) other
    than ``runserver``, and for ``runserver``'s autoreloader process (without ``--noreload`` and
    without ``RUN_MAIN=true``); True otherwise: runserver's server process, and any process a WSGI
    or ASGI server (gunicorn, uWSGI, uvicorn, daphne) loaded the project in.
    """
    argv = sys.argv if argv is None else argv
    if not argv or not _is_manage(argv[0]):
        return True
    command = argv[1] if len(argv) > 1 else "help"
    if command != "runserver":
        return False
    return os.environ.get(RELOADER_ENV) == "true" or "--noreload" in argv


def _is_manage(program: str) -> bool:
    return os.path.basename(program) in _MANAGE or program.endswith(os.path.join("django", "__main__.py"))
