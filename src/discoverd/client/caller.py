"""The load-balancing caller: call "the payments service", land on a healthy instance (seed 004).

``AsyncCaller`` (``client.caller()``) resolves an appid through the client's watched cache, picks an
instance with a :mod:`~discoverd.core.balancing` balancer, keeps callers away from failing instances
with local, decaying outlier ejection (:mod:`~discoverd.core.ejection` — it never writes to the
registry), and retries on the next untried instance:

* on connection errors, timeouts and HTTP 502/503/504;
* by default only for idempotent methods (``GET HEAD PUT DELETE OPTIONS``), configurable per callee;
* never on an instance already tried in the same call, and within a total deadline.

Per-callee settings (:class:`CalleeConfig`): timeout, access token (header ``Access-Token``),
HTTPS (certificates verified against the callee's ``tls_ca``, else the client's
``ClientConfig.tls_ca``, else the system's CAs), extra headers, retry policy. End-user context
headers of an incoming request are relayed (the seed's list) and ``X-From-App`` / ``X-From-Node``
are added. A route hook may rewrite app, method, path and body per call.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from discoverd.client.transport import tls_context
from discoverd.core.balancing import (
    Balancer,
    NoInstance,
    ZoneAffinity,
    filter_instances,
    instance_key,
    make_balancer,
)
from discoverd.core.ejection import Ejector
from discoverd.errors import DiscoverdError
from discoverd.model import Instance

if TYPE_CHECKING:
    from discoverd.client.async_client import AsyncClient

RELAYED_HEADERS = (
    "X-Real-IP",
    "X-Forwarded-For",
    "X-Client-ID",
    "X-Device-ID",
    "X-Client-App-Name",
    "X-Client-App-Version",
    "X-Session-ID",
    "X-Request-ID",
    "X-Host",
    "X-Scheme",
    "X-User-Agent",
)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})


class CallFailed(DiscoverdError):
    """Every attempt of a call failed; ``attempts`` lists ``(instance key, error text)``."""

    def __init__(self, message: str, attempts: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True, kw_only=True, slots=True)
class CalleeConfig:
    """How to call one app (seed 004's per-callee settings)."""

    timeout: float = 10.0
    """Total deadline of a call, retries included (seconds)."""
    attempt_timeout: float | None = None
    """Deadline of one attempt (default: what is left of ``timeout``)."""
    token: str = ""
    """Sent as the ``Access-Token`` header when set."""
    https: bool = False
    """Call ``https://`` (verifying certificates with ``ssl``) instead of ``http://``."""
    tls_ca: str = ""
    """PEM CA bundle verifying this callee over HTTPS; empty: the client's ``tls_ca``, else the system's."""
    headers: Mapping[str, str] = field(default_factory=dict)
    max_attempts: int = 3
    retry_non_idempotent: bool = False
    """Retry POST/PATCH too (only safe when the callee deduplicates)."""
    color: str | None = None
    """Only instances with ``metadata["color"]`` equal to this."""
    cluster: str | None = None
    """Only instances with ``metadata["cluster"]`` equal to this."""


@dataclass(slots=True)
class CallResult:
    """A finished call: status, headers, body, and which instance answered."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    instance: Instance
    attempts: int

    def json(self) -> Any:
        return orjson.loads(self.body)

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")


@dataclass(slots=True)
class Route:
    """What a route hook may rewrite."""

    appid: str
    method: str
    path: str
    body: Any = None


RouteHook = Callable[[Route], Route]


def relay_headers(incoming: Mapping[str, str] | Any | None) -> dict[str, str]:
    """The end-user context headers to forward from ``incoming`` (an aiohttp request or a mapping)."""
    if incoming is None:
        return {}
    headers = getattr(incoming, "headers", incoming)
    out = {}
    for name in RELAYED_HEADERS:
        value = headers.get(name)
        if value is None and hasattr(headers, "items"):
            value = next((v for k, v in headers.items() if str(k).lower() == name.lower()), None)
        if value is not None:
            out[name] = str(value)
    return out


def _base_url(ins: Instance, https: bool) -> str:
    wanted = "https://" if https else "http://"
    for addr in ins.addrs:
        if addr.startswith(wanted):
            return addr.rstrip("/")
    for addr in ins.addrs:  # a bare host:port or another scheme's host:port
        hostport = addr.split("://", 1)[-1].split("/", 1)[0]
        if hostport:
            return wanted + hostport
    raise NoInstance(f"{instance_key(ins)} has no usable address")


class AsyncCaller:
    """Calls apps by appid through an :class:`AsyncClient`. Task-safe; ``aclose()`` is idempotent."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        balancer: str | Callable[[], Balancer] = "least-used",
        callees: Mapping[str, CalleeConfig] | None = None,
        default: CalleeConfig | None = None,
        route: RouteHook | None = None,
        ejector: Ejector | None = None,
        from_app: str = "",
        zone_affinity: bool = True,
    ) -> None:
        self.client = client
        self.callees = dict(callees or {})
        self.default = default or CalleeConfig()
        self.route = route
        self.ejector = ejector if ejector is not None else Ejector()
        self.from_app = from_app
        if isinstance(balancer, str):
            name = balancer
            make_balancer(name)  # validate now (ConfigError), not on the first call

            def factory() -> Balancer:
                return make_balancer(name)

            self._balancer_factory: Callable[[], Balancer] = factory
        else:
            self._balancer_factory = balancer
        self._zone_affinity = zone_affinity
        self._balancers: dict[str, Balancer] = {}
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<AsyncCaller apps={sorted(self._balancers)}>"

    def config_for(self, appid: str) -> CalleeConfig:
        return self.callees.get(appid, self.default)

    def balancer_for(self, appid: str) -> Balancer:
        bal = self._balancers.get(appid)
        if bal is None:
            bal = self._balancer_factory()
            if self._zone_affinity:
                bal = ZoneAffinity(bal, self.client.zone)
            self._balancers[appid] = bal
        return bal

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise DiscoverdError("caller is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def _ssl(self, cfg: CalleeConfig) -> ssl.SSLContext | bool:
        """What to pass as aiohttp's ``ssl=``: a context for a custom CA (one per bundle), else ``True``."""
        cafile = cfg.tls_ca or self.client.config.tls_ca
        if not cfg.https or not cafile:
            return True
        ctx = self._contexts.get(cafile)
        if ctx is None:
            ctx = self._contexts[cafile] = tls_context(cafile)
        return ctx

    async def candidates(self, appid: str, cfg: CalleeConfig) -> list[Instance]:
        """Healthy-looking instances of ``appid``: UP, filtered by colour/cluster, not ejected."""
        instances = filter_instances(await self.client.fetch(appid), color=cfg.color, cluster=cfg.cluster)
        bal = self._balancers.get(appid)
        if isinstance(bal, ZoneAffinity):
            bal.set_scheduler(self.client.scheduler(appid))
        return self.ejector.available(instances, time.monotonic())

    def _headers(self, cfg: CalleeConfig, extra: Mapping[str, str] | None, context: Any) -> dict[str, str]:
        headers = relay_headers(context)
        headers.update(cfg.headers)
        if cfg.token:
            headers["Access-Token"] = cfg.token
        headers["X-From-App"] = self.from_app
        headers["X-From-Node"] = self.client.hostname
        if extra:
            headers.update(extra)
        return headers

    async def request(
        self,
        method: str,
        appid: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        context: Any = None,
        timeout: float | None = None,
    ) -> CallResult:
        """Call ``method path`` on an instance of ``appid``; raises :class:`CallFailed` when every
        attempt failed (the last HTTP answer is returned, not raised, when it was not retryable)."""
        route = Route(appid, method.upper(), path, json if json is not None else data)
        if self.route is not None:
            route = self.route(route)
        cfg = self.config_for(route.appid)
        deadline = time.monotonic() + (timeout if timeout is not None else cfg.timeout)
        retryable = route.method in IDEMPOTENT or cfg.retry_non_idempotent
        hdrs = self._headers(cfg, headers, context)
        body_kw: dict[str, Any] = {}
        if json is not None:
            body_kw["data"] = orjson.dumps(route.body)
            hdrs.setdefault("Content-Type", "application/json")
        elif route.body is not None:
            body_kw["data"] = route.body
        tried: list[str] = []
        failures: list[tuple[str, str]] = []
        balancer = self.balancer_for(route.appid)
        tls = self._ssl(cfg)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallFailed(f"{route.appid}: deadline exceeded after {len(tried)} attempt(s)", failures)
            try:
                ins = balancer.pick(await self.candidates(route.appid, cfg), exclude=tried)
            except NoInstance:
                raise CallFailed(
                    f"{route.appid}: no instance left to try ({len(tried)} tried)", failures
                ) from None
            key = instance_key(ins)
            tried.append(key)
            per_try = min(left, cfg.attempt_timeout or left)
            url = _base_url(ins, cfg.https) + route.path
            started = time.monotonic()
            try:
                async with self._http().request(
                    route.method,
                    url,
                    params=params,
                    headers=hdrs,
                    timeout=aiohttp.ClientTimeout(total=per_try),
                    ssl=tls,
                    **body_kw,
                ) as resp:
                    body = await resp.read()
                    result = CallResult(resp.status, dict(resp.headers), body, ins, len(tried))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._report(balancer, ins, key, ok=False, started=started)
                failures.append((key, f"{type(exc).__name__}: {exc}"))
                if not retryable or len(tried) >= cfg.max_attempts:
                    raise CallFailed(f"{route.appid}: {failures[-1][1]}", failures) from None
                continue
            if result.status in RETRY_STATUSES:
                self._report(balancer, ins, key, ok=False, started=started)
                failures.append((key, f"HTTP {result.status}"))
                if retryable and len(tried) < cfg.max_attempts:
                    continue
                return result
            self._report(balancer, ins, key, ok=True, started=started)
            return result

    def _report(self, balancer: Balancer, ins: Instance, key: str, *, ok: bool, started: float) -> None:
        now = time.monotonic()
        balancer.report(ins, ok, max(0.0, now - started))
        self.ejector.report(key, ok, now)

    async def get(self, appid: str, path: str, **kw: Any) -> CallResult:
        return await self.request("GET", appid, path, **kw)

    async def post(self, appid: str, path: str, **kw: Any) -> CallResult:
        return await self.request("POST", appid, path, **kw)

    async def put(self, appid: str, path: str, **kw: Any) -> CallResult:
        return await self.request("PUT", appid, path, **kw)

    async def delete(self, appid: str, path: str, **kw: Any) -> CallResult:
        return await self.request("DELETE", appid, path, **kw)

    async def head(self, appid: str, path: str, **kw: Any) -> CallResult:
        return await self.request("HEAD", appid, path, **kw)

    @contextlib.asynccontextmanager
    async def websocket(
        self, appid: str, path: str, *, context: Any = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """A WebSocket to an instance of ``appid`` (tries the next instance when connecting fails)."""
        cfg = self.config_for(appid)
        hdrs = self._headers(cfg, headers, context)
        balancer = self.balancer_for(appid)
        tried: list[str] = []
        failures: list[tuple[str, str]] = []
        while True:
            try:
                ins = balancer.pick(await self.candidates(appid, cfg), exclude=tried)
            except NoInstance:
                raise CallFailed(f"{appid}: no instance accepted the websocket", failures) from None
            key = instance_key(ins)
            tried.append(key)
            url = _base_url(ins, cfg.https).replace("http", "ws", 1) + path
            started = time.monotonic()
            try:
                ws = await self._http().ws_connect(
                    url,
                    headers=hdrs,
                    timeout=aiohttp.ClientWSTimeout(ws_close=cfg.timeout),
                    ssl=self._ssl(cfg),
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._report(balancer, ins, key, ok=False, started=started)
                failures.append((key, f"{type(exc).__name__}: {exc}"))
                if len(tried) >= cfg.max_attempts:
                    raise CallFailed(f"{appid}: {failures[-1][1]}", failures) from None
                continue
            self._report(balancer, ins, key, ok=True, started=started)
            try:
                yield ws
            finally:
                await ws.close()
            return

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            await self._session.close()
