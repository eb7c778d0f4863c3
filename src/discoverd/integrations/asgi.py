"""ASGI lifespan integration: FastAPI, Starlette, or any ASGI application and server.

Two ways to install it, with the same options and the same behaviour:

* :func:`lifespan` makes a lifespan function for frameworks that take one
  (``FastAPI(lifespan=lifespan(appid=...))``, ``Starlette(lifespan=...)``);
* :class:`DiscoverdMiddleware` wraps any ASGI application (an app with its own lifespan, or one
  that does not speak the lifespan protocol at all).

At start-up an :class:`~discoverd.client.async_client.AsyncClient` is started (``nodes``, ``env``,
``zone``, ``region``, ``hostname`` default to ``$DISCOVERY_NODES``, ``$DEPLOY_ENV``, ``$ZONE``,
``$REGION``, ``$HOSTNAME`` as the client's do) and, unless discovery only, the instance ``appid``
(default ``$APP_ID``) is registered at ``addrs``; a failure fails the start-up. At shutdown the
registration is cancelled and the client closed. The ASGI server must run the lifespan protocol
(uvicorn, hypercorn, granian and daphne do; uvicorn's ``--lifespan off`` does not).

Handlers reach the client with :func:`get_client` (a request, a websocket, the application or an
ASGI scope), or directly: it is ``request.state.discoverd`` (the lifespan state, copied into every
request by the server) and, with :func:`lifespan`, ``app.state.discoverd`` as well.

``register`` — ``True``: register (``addrs`` required); ``False``: discovery only; ``None``
(default): register unless a gunicorn master registered this server already
(:mod:`discoverd.integrations.gunicorn`; its workers, uvicorn workers included, are discovery only).
Register from a process that owns the listening address: with ``uvicorn --workers N`` (N > 1) each
worker would register and its exit would cancel the instance the others still serve; run uvicorn
workers under gunicorn (``-k uvicorn.workers.UvicornWorker``) with the gunicorn hooks instead.

Neither Starlette nor FastAPI is imported: this module speaks plain ASGI.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.errors import DiscoverdError
from discoverd.integrations import _common

log = logging.getLogger("discoverd.integrations")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Lifespan = Callable[[object], contextlib.AbstractAsyncContextManager[dict[str, Any]]]

STATE_KEY = "discoverd"
"""The name of the client in the lifespan state (``request.state.discoverd``) and ``app.state``."""


def lifespan(
    *,
    appid: str | None = None,
    addrs: Iterable[str] | None = None,
    register: bool | None = None,
    nodes: Sequence[str] | str | None = None,
    env: str | None = None,
    zone: str | None = None,
    region: str | None = None,
    hostname: str | None = None,
    metadata: dict[str, str] | None = None,
    version: str = "",
    config: ClientConfig | None = None,
) -> Lifespan:
    """A lifespan function (``app`` → async context manager) that runs a client while the app runs.

    It yields the lifespan state ``{"discoverd": client}`` and sets ``app.state.discoverd`` when the
    application has a ``state``. Options as in the module docstring; ``metadata`` and ``version``
    are the registered instance's. Raises :class:`~discoverd.errors.ConfigError` at once when the
    instance is to be registered without an appid or addresses. Nest it in an application's own
    lifespan with ``async with discoverd_lifespan(app) as state: ... yield state``.
    """
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

    @contextlib.asynccontextmanager
    async def discoverd_lifespan(app: object) -> AsyncIterator[dict[str, Any]]:
        client = await _common.start_async(plan)
        app_state = getattr(app, "state", None)
        if app_state is not None:
            app_state.discoverd = client
        try:
            yield {STATE_KEY: client}
        finally:
            await client.aclose()

    return discoverd_lifespan


class DiscoverdMiddleware:
    """ASGI middleware that runs a client for the wrapped application's lifespan.

    The client starts before the application's own start-up and closes after its shutdown; it is
    put in the lifespan state (``request.state.discoverd``). An application that does not speak
    the lifespan protocol (it raises on a ``lifespan`` scope) still gets the client: the middleware
    then answers the server itself. Keyword arguments are those of :func:`lifespan`. Other scopes
    pass through untouched. Usable as ``Starlette(middleware=[Middleware(DiscoverdMiddleware, ...)])``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        appid: str | None = None,
        addrs: Iterable[str] | None = None,
        register: bool | None = None,
        nodes: Sequence[str] | str | None = None,
        env: str | None = None,
        zone: str | None = None,
        region: str | None = None,
        hostname: str | None = None,
        metadata: dict[str, str] | None = None,
        version: str = "",
        config: ClientConfig | None = None,
    ) -> None:
        self.app = app
        self._lifespan = lifespan(
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        async with contextlib.AsyncExitStack() as stack:
            await _LifespanRun(self.app, stack, scope, receive, send).run(self._lifespan)


class _LifespanRun:
    """One lifespan of a :class:`DiscoverdMiddleware`: the client's start and close around the app's."""

    def __init__(
        self, app: ASGIApp, stack: contextlib.AsyncExitStack, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.app, self.stack, self.scope = app, stack, scope
        self.receive, self.send = receive, send
        self.startup: Message | None = None
        self.app_spoke = False

    async def run(self, make: Lifespan) -> None:
        self.startup = await self.receive()
        try:
            state = await self.stack.enter_async_context(make(None))
        except Exception as exc:
            await self.send({"type": "lifespan.startup.failed", "message": f"discoverd: {exc!r}"})
            return
        self.scope.setdefault("state", {}).update(state)
        try:
            await self.app(self.scope, self._receive, self._send)
        except Exception:
            if self.app_spoke:
                raise
            log.debug("the application does not do lifespan; discoverd answers it", exc_info=True)
        if not self.app_spoke:
            await self._answer_alone()

    async def _receive(self) -> Message:
        message, self.startup = self.startup, None
        return message if message is not None else await self.receive()

    async def _send(self, message: Message) -> None:
        self.app_spoke = True
        if message["type"] in (
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            await self.stack.aclose()  # the registration is cancelled before the server is told
        await self.send(message)

    async def _answer_alone(self) -> None:
        """The application does not do lifespan: complete the start-up, wait for the shutdown."""
        await self.send({"type": "lifespan.startup.complete"})
        while (await self.receive())["type"] != "lifespan.shutdown":
            pass
        await self.stack.aclose()
        await self.send({"type": "lifespan.shutdown.complete"})


def get_client(source: object) -> AsyncClient:
    """The client of a running :func:`lifespan` or :class:`DiscoverdMiddleware`.

    ``source`` is a request or websocket (its lifespan state, else its app's ``state``), an
    application (its ``state``) or an ASGI scope (its ``"state"``). Raises
    :class:`~discoverd.errors.DiscoverdError` when there is none (not installed, or not started).
    """
    for candidate in _candidates(source):
        if isinstance(candidate, AsyncClient):
            return candidate
    raise DiscoverdError(
        "no discoverd client here: install discoverd.integrations.asgi.lifespan or DiscoverdMiddleware "
        "and run the application's lifespan"
    )


def _candidates(source: object) -> list[object]:
    if isinstance(source, Mapping):
        return [source.get("state", {}).get(STATE_KEY)]
    out: list[object] = []
    for path in (("state",), ("app", "state")):
        obj: object = source
        with contextlib.suppress(AttributeError, LookupError):
            for name in path:
                obj = getattr(obj, name)
            out.append(getattr(obj, STATE_KEY))
    return out
