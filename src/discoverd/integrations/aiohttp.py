"""``aiohttp.web`` integration: a client for the application's lifetime, stored under an ``AppKey``.

:func:`setup` adds a ``cleanup_ctx`` to an :class:`aiohttp.web.Application`: at start-up it starts
an :class:`~discoverd.client.async_client.AsyncClient` and, when the addresses are given, registers
the instance; at cleanup it cancels the registrations and closes the client. Options and their
environment defaults are those of :func:`discoverd.integrations.asgi.lifespan`, ``register=None``
included (register unless a gunicorn master registered this server).

``web.run_app(app, port=8080)`` knows its address before it starts: pass ``addrs``. An
application started on port 0 (``AppRunner`` + ``TCPSite(runner, host, 0)``) learns its port only
once the site listens: leave ``addrs`` out and, after ``site.start()``, call
``await register(app, site_urls(runner))``; that registration is cancelled at cleanup like the
other.

Handlers reach the client with ``request.app[DISCOVERD]`` or :func:`get_client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from aiohttp import web

from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.registration import AsyncRegistration
from discoverd.errors import ConfigError, DiscoverdError
from discoverd.integrations import _common

DISCOVERD = web.AppKey("discoverd", AsyncClient)
"""Where the running client is stored: ``app[DISCOVERD]``, from start-up to cleanup."""

_PLAN = web.AppKey("discoverd.plan", _common.IntegrationPlan)


def setup(
    app: web.Application,
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
    """Run a client (and the instance's registration) for the lifetime of ``app``.

    Call it before the application starts, once per application. ``metadata`` and ``version`` are
    the registered instance's. Raises :class:`~discoverd.errors.ConfigError` when called twice or
    when registering without an appid; start-up fails when the registry cannot be reached
    (``config.start_timeout``) or refuses the instance.
    """
    if _PLAN in app:
        raise ConfigError("discoverd.integrations.aiohttp.setup() was already called for this application")
    app[_PLAN] = _common.plan(
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
    app.cleanup_ctx.append(_client_context)


async def _client_context(app: web.Application) -> AsyncIterator[None]:
    client = await _common.start_async(app[_PLAN])
    app[DISCOVERD] = client
    try:
        yield
    finally:
        await client.aclose()


async def register(app: web.Application, addrs: Iterable[str]) -> AsyncRegistration:
    """Register the instance of a started ``app`` at ``addrs`` (those known only once it listens).

    The appid, metadata and version are those given to :func:`setup`; the registration is
    cancelled at the application's cleanup. Raises :class:`~discoverd.errors.ConfigError` when
    :func:`setup` was called with ``register=False`` (or defaulted to discovery only), and the
    client's errors when the registry refuses.
    """
    plan = app.get(_PLAN)
    if plan is None or not plan.register:
        raise ConfigError("this application does not register (setup() with register=False, or not set up)")
    return await get_client(app).register(**plan.with_addrs(addrs).register_args())


def site_urls(runner: web.BaseRunner, scheme: str = "http") -> list[str]:
    """``scheme://host:port`` of every TCP address a started ``runner`` listens on, wildcard hosts
    (``0.0.0.0``, ``::``) replaced by this machine's outward IPv4 address."""
    return _common.urls(runner.addresses, scheme)


def get_client(source: web.Application | web.Request) -> AsyncClient:
    """The client of a started application, or of a request's application (a sub-application's
    request finds its parents' client). Raises :class:`~discoverd.errors.DiscoverdError` before
    start-up or without :func:`setup`; after cleanup it is the closed client."""
    client = source.config_dict.get(DISCOVERD) if isinstance(source, web.Request) else source.get(DISCOVERD)
    if client is None:
        raise DiscoverdError("no discoverd client: call setup(app, ...) and start the application")
    return client
