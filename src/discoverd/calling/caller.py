"""The load-balancing caller: call "the payments service", land on a healthy instance.

``AsyncCaller`` resolves an appid through an :class:`~discoverd.calling.source.InstanceSource` (for
``client.caller()``, the client's watched cache; for ``registry.caller()``, a
:class:`~discoverd.calling.source.RegistrySource` watching the registry), picks an instance with a
:mod:`~discoverd.core.balancing` balancer, keeps callers away from failing instances with local,
decaying outlier ejection (:mod:`~discoverd.core.ejection` — it never writes to the registry), and
retries on the next untried instance:

* on connection errors, timeouts and HTTP 502/503/504;
* by default only for idempotent methods (``GET HEAD PUT DELETE OPTIONS``), configurable per callee;
* never on an instance already tried in the same call, and within a total deadline.

Per-callee settings (:class:`CalleeConfig`): timeout, access token (header ``Access-Token``),
HTTPS (certificates verified against the callee's ``tls_ca``, else the caller's ``tls_ca``, else the
system's CAs), extra headers, retry policy. End-user context headers of an incoming request are
relayed (:data:`RELAYED_HEADERS`) and ``X-From-App`` / ``X-From-Node`` are added. A route hook may
rewrite app, method, path and body per call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from discoverd import jsoncodec
from discoverd.calling.callee import (
    IDEMPOTENT,
    RELAYED_HEADERS,
    RETRY_STATUSES,
    CalleeConfig,
    CallFailed,
    CallResult,
    CallRoute,
    RouteHook,
    base_url,
    relay_headers,
)
from discoverd.calling.http import HttpClient, HttpReply, TlsSetting, WebSocket, tls_context
from discoverd.calling.source import InstanceSource
from discoverd.core.balancing import (
    Balancer,
    NoInstance,
    ZoneAffinity,
    filter_instances,
    instance_key,
    make_balancer,
)
from discoverd.core.ejection import Ejector
from discoverd.errors import DiscoverdError, Unavailable
from discoverd.model import Instance

__all__ = [
    "IDEMPOTENT",
    "RELAYED_HEADERS",
    "RETRY_STATUSES",
    "AsyncCaller",
    "CallFailed",
    "CallResult",
    "CalleeConfig",
    "CallRoute",
    "RouteHook",
    "relay_headers",
]


@dataclass(slots=True)
class _Tries:
    """The instances one call tried, and why each failed."""

    appid: str
    tried: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def failed(self, key: str, why: str) -> None:
        self.failures.append((key, why))

    def error(self, message: str) -> CallFailed:
        return CallFailed(f"{self.appid}: {message}", self.failures)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A prepared request: everything but the instance."""

    route: CallRoute
    params: Mapping[str, str] | None
    headers: dict[str, str]
    body: Any
    tls: TlsSetting


class AsyncCaller:
    """Calls apps by appid, resolving them through an :class:`InstanceSource`. Task-safe.

    ``from_app`` / ``from_node`` are sent as ``X-From-App`` / ``X-From-Node``; ``tls_ca`` verifies
    HTTPS callees whose :class:`CalleeConfig` names no bundle (empty: the system's CAs). With
    ``zone_affinity`` the balancer prefers the source's zone (or its zone weights). ``aclose()`` is
    idempotent; a closed caller raises :class:`~discoverd.errors.DiscoverdError` on calls. The caller
    does not own ``source``; whoever made the caller (``client.caller()``, ``registry.caller()``) closes
    it with itself, and ``async with caller`` closes it earlier.
    """

    def __init__(
        self,
        source: InstanceSource,
        *,
        balancer: str | Callable[[], Balancer] = "least-used",
        callees: Mapping[str, CalleeConfig] | None = None,
        default: CalleeConfig | None = None,
        route: RouteHook | None = None,
        ejector: Ejector | None = None,
        from_app: str = "",
        from_node: str = "",
        tls_ca: str = "",
        zone_affinity: bool = True,
    ) -> None:
        self.source = source
        self.callees = dict(callees or {})
        self.default = default or CalleeConfig()
        self.route = route
        self.ejector = ejector if ejector is not None else Ejector()
        self.from_app = from_app
        self.from_node = from_node
        self.tls_ca = tls_ca
        if isinstance(balancer, str):
            make_balancer(balancer)  # validate now (ConfigError), not on the first call
        self._balancer_factory = balancer
        self._zone_affinity = zone_affinity
        self._balancers: dict[str, Balancer] = {}
        self._http = HttpClient()
        self._contexts: dict[str, TlsSetting] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<AsyncCaller apps={sorted(self._balancers)}>"

    async def __aenter__(self) -> AsyncCaller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def config_for(self, appid: str) -> CalleeConfig:
        """The callee settings of ``appid`` (``callees[appid]``, else ``default``)."""
        return self.callees.get(appid, self.default)

    def balancer_for(self, appid: str) -> Balancer:
        """The balancer of ``appid``, made on first use (wrapped in zone affinity when enabled)."""
        bal = self._balancers.get(appid)
        if bal is None:
            factory = self._balancer_factory
            bal = make_balancer(factory) if isinstance(factory, str) else factory()
            if self._zone_affinity:
                bal = ZoneAffinity(bal, self.source.zone)
            self._balancers[appid] = bal
        return bal

    def _tls(self, cfg: CalleeConfig) -> TlsSetting:
        """A context for a custom CA (one per bundle), else ``True`` (the system's CAs)."""
        cafile = cfg.tls_ca or self.tls_ca
        if not cfg.https or not cafile:
            return True
        ctx = self._contexts.get(cafile)
        if ctx is None:
            ctx = self._contexts[cafile] = tls_context(cafile)
        return ctx

    async def candidates(self, appid: str, cfg: CalleeConfig) -> list[Instance]:
        """Healthy-looking instances of ``appid``: UP, filtered by colour/cluster, not ejected."""
        found = await self.source.instances(appid)
        instances = filter_instances(found, color=cfg.color, cluster=cfg.cluster)
        bal = self._balancers.get(appid)
        if isinstance(bal, ZoneAffinity):
            weights = self.source.zone_weights(appid)
            bal.set_scheduler(None if weights is None else dict(weights))
        return self.ejector.available(instances, time.monotonic())

    def _headers(self, cfg: CalleeConfig, extra: Mapping[str, str] | None, context: Any) -> dict[str, str]:
        headers = relay_headers(context)
        headers.update(cfg.headers)
        if cfg.token:
            headers["Access-Token"] = cfg.token
        headers["X-From-App"] = self.from_app
        headers["X-From-Node"] = self.from_node
        if extra:
            headers.update(extra)
        return headers

    async def _pick(self, appid: str, cfg: CalleeConfig, tries: _Tries) -> Instance:
        """The next untried candidate (recorded as tried); raises :class:`NoInstance`."""
        balancer = self.balancer_for(appid)  # made first: candidates() hands it the zone weights
        ins = balancer.pick(await self.candidates(appid, cfg), exclude=tries.tried)
        tries.tried.append(instance_key(ins))
        return ins

    def _report(self, appid: str, ins: Instance, *, ok: bool, started: float) -> None:
        now = time.monotonic()
        self.balancer_for(appid).report(ins, ok, max(0.0, now - started))
        self.ejector.report(instance_key(ins), ok, now)

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
        route = CallRoute(appid, method.upper(), path, json if json is not None else data)
        if self.route is not None:
            route = self.route(route)
        cfg = self.config_for(route.appid)
        deadline = time.monotonic() + (timeout if timeout is not None else cfg.timeout)
        hdrs = self._headers(cfg, headers, context)
        body = route.body
        if json is not None:
            body = jsoncodec.dumps(route.body)
            hdrs.setdefault("Content-Type", "application/json")
        out = _Outgoing(route, params, hdrs, body, self._tls(cfg))
        retryable = route.method in IDEMPOTENT or cfg.retry_non_idempotent
        tries = _Tries(route.appid)
        while True:
            result = await self._attempt(out, cfg, tries, deadline)
            if result is not None and result.status not in RETRY_STATUSES:
                return result
            if not retryable or len(tries.tried) >= cfg.max_attempts:
                if result is None:
                    raise tries.error(tries.failures[-1][1])
                return result

    async def _attempt(
        self, out: _Outgoing, cfg: CalleeConfig, tries: _Tries, deadline: float
    ) -> CallResult | None:
        """One attempt on the next instance: its answer, or ``None`` when it could not be reached.

        Raises :class:`CallFailed` when the deadline passed or no untried instance is left.
        """
        appid = out.route.appid
        left = deadline - time.monotonic()
        if left <= 0:
            raise tries.error(f"deadline exceeded after {len(tries.tried)} attempt(s)")
        try:
            ins = await self._pick(appid, cfg, tries)
        except NoInstance:
            raise tries.error(f"no instance left to try ({len(tries.tried)} tried)") from None
        started = time.monotonic()
        try:
            reply = await self._send(out, ins, cfg, min(left, cfg.attempt_timeout or left))
        except Unavailable as exc:
            self._report(appid, ins, ok=False, started=started)
            tries.failed(instance_key(ins), str(exc))
            return None
        ok = reply.status not in RETRY_STATUSES
        self._report(appid, ins, ok=ok, started=started)
        if not ok:
            tries.failed(instance_key(ins), f"HTTP {reply.status}")
        return CallResult(reply.status, reply.headers, reply.body, ins, len(tries.tried))

    async def _send(self, out: _Outgoing, ins: Instance, cfg: CalleeConfig, timeout: float) -> HttpReply:
        if self._closed:
            raise DiscoverdError("caller is closed")
        return await self._http.request(
            out.route.method,
            base_url(ins, cfg.https) + out.route.path,
            params=out.params,
            data=out.body,
            headers=out.headers,
            timeout=timeout,
            tls=out.tls,
        )

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
    ) -> AsyncIterator[WebSocket]:
        """A WebSocket to an instance of ``appid`` (tries the next instance when connecting fails)."""
        cfg = self.config_for(appid)
        ws = await self._connect(appid, path, cfg, self._headers(cfg, headers, context))
        try:
            yield ws
        finally:
            await ws.close()

    async def _connect(self, appid: str, path: str, cfg: CalleeConfig, headers: dict[str, str]) -> WebSocket:
        tries = _Tries(appid)
        while True:
            try:
                ins = await self._pick(appid, cfg, tries)
            except NoInstance:
                raise tries.error("no instance accepted the websocket") from None
            if self._closed:
                raise DiscoverdError("caller is closed")
            url = base_url(ins, cfg.https).replace("http", "ws", 1) + path
            started = time.monotonic()
            try:
                ws = await self._http.websocket(
                    url, headers=headers, close_timeout=cfg.timeout, tls=self._tls(cfg)
                )
            except Unavailable as exc:
                self._report(appid, ins, ok=False, started=started)
                tries.failed(instance_key(ins), str(exc))
                if len(tries.tried) >= cfg.max_attempts:
                    raise tries.error(tries.failures[-1][1]) from None
                continue
            self._report(appid, ins, ok=True, started=started)
            return ws

    async def aclose(self) -> None:
        """Close the connections to the instances. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._http.aclose()
