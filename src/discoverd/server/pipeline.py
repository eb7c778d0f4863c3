"""What runs for a request: one ordered chain of middlewares, built once from the configuration.

:func:`build` assembles, outermost first::

    request ids + access log  →  auth  →  metrics  →  routing  →  the route's handler

* **request ids + access log** (:func:`request_ids`): runs the rest with
  :data:`~discoverd.server.logs.request_id` (from ``X-Request-Id`` or ``traceparent``) set, so every
  line logged meanwhile carries it, and the request in the node's
  :class:`~discoverd.server.logs.RequestScope` (the event log reads the client address there);
  with ``access_log`` on, logs one line per answered request on ``discoverd.access``.
* **auth** (:func:`authenticating`, only with tokens or a peer secret): the
  :class:`~discoverd.server.auth.Gate` decides by path; a refusal is answered -401/-403 here.
* **metrics** (:func:`timing`): the handler latency of the protocol routes answered at once.
* **routing** (:func:`routing`): the route for the path (404), its method (405), start-up protect
  (-500 for protocol reads), then the handler; a :class:`~discoverd.errors.BadRequest` it raises
  becomes the protocol's -400.

Parameters are parsed once, by the first stage that needs them (:func:`form_of`), and kept on the
request; a malformed query or body is answered -400 by that stage. A stage is a plain function of
the request returning the answer bytes, or ``None`` when the request is held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from discoverd.core.params import BindError, Form
from discoverd.errors import BadRequest
from discoverd.server import answers
from discoverd.server.http import Handler, HttpRequest, text_response
from discoverd.server.lifecycle import Lifecycle
from discoverd.server.logs import RequestScope, request_id, request_id_of
from discoverd.server.routes import Params, Route, RouteTable

access = logging.getLogger("discoverd.access")

Authorizer = Callable[[HttpRequest, Form, str], "bytes | None"]
"""``(request, form, path) -> refusal or None``: :class:`~discoverd.server.auth.Gate` is the node's."""

_FORM_TYPE = b"application/x-www-form-urlencoded"
_NOT_FOUND = "404 page not found"
_NOT_ALLOWED = "405 method not allowed"


def build(
    routes: RouteTable,
    *,
    scope: RequestScope,
    lifecycle: Lifecycle,
    gate: Authorizer | None,
    observe: Callable[[str, float], None] | None,
    access_log: bool,
) -> Handler:
    """The node's request handler: the chain of the module docstring, stages left out when off."""
    handler = routing(routes, lifecycle)
    if observe is not None:
        handler = timing(handler, observe)
    if gate is not None:
        handler = authenticating(handler, routes, gate)
    return request_ids(handler, scope, access_log=access_log)


def request_ids(inner: Handler, scope: RequestScope, *, access_log: bool) -> Handler:
    """Run ``inner`` with the request in ``scope`` and its id in the logging context."""

    def handle(req: HttpRequest) -> bytes | None:
        headers = req.headers
        rid = request_id_of(req) if b"x-request-id" in headers or b"traceparent" in headers else ""
        id_token = request_id.set(rid) if rid else None
        scope.current = req
        try:
            if not access_log:
                return inner(req)
            started = time.perf_counter()
            answer = inner(req)
            _log_access(req, answer, time.perf_counter() - started)
            return answer
        finally:
            scope.current = req.form = None  # a held request keeps nothing it no longer needs
            if id_token is not None:
                request_id.reset(id_token)

    return handle


def _log_access(req: HttpRequest, answer: bytes | None, seconds: float) -> None:
    status = "held" if answer is None else answer[9:12].decode("latin-1")
    extra = {"method": req.method, "path": req.path, "status": status, "ms": round(seconds * 1000, 3)}
    access.info("%s %s %s", req.method, req.path, status, extra={**extra, "client": req.peer})


def authenticating(inner: Handler, routes: RouteTable, gate: Authorizer) -> Handler:
    """Ask ``gate`` before ``inner``; its refusal is the answer."""

    def handle(req: HttpRequest) -> bytes | None:
        route = routes.get(req.path)
        if route is None or route.public:
            return inner(req)  # routing answers 404
        form = form_of(req, route)
        if isinstance(form, bytes):
            return form
        refused = gate(req, form, req.path)
        return refused if refused is not None else inner(req)

    return handle


def timing(inner: Handler, observe: Callable[[str, float], None]) -> Handler:
    """Time ``inner`` for requests answered at once (``observe`` keeps only the protocol paths)."""
    perf_counter = time.perf_counter

    def handle(req: HttpRequest) -> bytes | None:
        started = perf_counter()
        answer = inner(req)
        if answer is not None:
            observe(req.path, perf_counter() - started)
        return answer

    return handle


def routing(routes: RouteTable, lifecycle: Lifecycle) -> Handler:
    """Find the route and run its handler (see the module docstring)."""

    def handle(req: HttpRequest) -> bytes | None:
        route = routes.get(req.path)
        if route is None:
            return text_response(404, _NOT_FOUND)
        if req.method not in route.methods:
            return text_response(405, _NOT_ALLOWED)
        if lifecycle.protected and route.gated:
            return answers.error(-500)
        form = req.form or form_of(req, route)  # parsed already when the auth stage ran
        if isinstance(form, bytes):
            return form
        try:
            return route.handler(req, form)
        except BadRequest as exc:
            return answers.error(-400, exc.message, status_header=not isinstance(exc, BindError))

    return handle


def form_of(req: HttpRequest, route: Route) -> Form | bytes:
    """The request's parameters for ``route`` (parsed once), or the -400 answer for malformed ones."""
    form = req.form
    if form is not None:
        return form
    if route.params is Params.NONE:
        form = Form()
    else:
        body = req.body if route.params is Params.FORM and req.method == "POST" and _is_form(req) else b""
        try:
            form = Form.parse(body, req.query)
        except BadRequest as exc:
            return answers.error(-400, exc.message, status_header=False)
    req.form = form
    return form


def _is_form(req: HttpRequest) -> bool:
    raw = req.headers.get(b"content-type", b"")
    return raw == _FORM_TYPE or raw.split(b";", 1)[0].strip().lower() == _FORM_TYPE
