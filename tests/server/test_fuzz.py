"""Hypothesis-driven fuzzing of every endpoint's parameters, over real HTTP, against one real node.

Each test function starts its own node in a private event loop (:class:`asyncio.Runner`), because
hypothesis runs many examples per test function and async fixtures do not mix with ``@given``.
Requests are written by a minimal raw HTTP/1.1 client, so that malformed percent escapes, binary
bytes and odd content types reach the server exactly as generated.

Every answer must be HTTP 200 with a JSON envelope whose ``code`` is one the endpoint may give
(404/405 ``text/plain`` only for a wrong path or method); never a 500 or a dropped connection.
After each example the registry's invariants must hold, and instances registered before the run
under an env the fuzzer never generates (``guarded``) must be exactly as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote_from_bytes

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discoverd.core import wire
from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node

GUARDED_ENV: Final = "guarded"
ANSWER_TIMEOUT: Final = 5.0

ROUTES: Final = {
    "register": "POST",
    "renew": "POST",
    "cancel": "POST",
    "set": "POST",
    "fetch": "GET",
    "fetchs": "GET",
    "fetch/all": "GET",
    "poll": "GET",
    "polls": "GET",
    "nodes": "GET",
}
#: The codes each endpoint may answer with (the node runs without start-up protect, so no -500).
CODES: Final = {
    "register": {0, -400},
    "renew": {0, -400, -404, -409},  # -409: replication=true with an older dirty_timestamp (§3.2)
    "cancel": {0, -400, -404},
    "set": {0, -400},
    "fetch": {0, -400, -404},
    "fetchs": {0, -400},
    "fetch/all": {0},
    "poll": {0, -304, -400, -404},
    "polls": {0, -304, -400},
    "nodes": {0},
}

_STR_KEYS: Final = {
    "register": ("region", "zone", "env", "appid", "hostname", "addrs", "version", "metadata"),
    "renew": ("region", "zone", "env", "appid", "hostname"),
    "cancel": ("region", "zone", "env", "appid", "hostname"),
    "set": ("region", "zone", "env", "appid", "hostname", "metadata"),
    "fetch": ("zone", "env", "appid"),
    "fetchs": ("zone", "env", "appid"),
    "poll": ("zone", "env", "appid", "hostname"),
    "polls": ("zone", "env", "appid", "hostname"),
    "fetch/all": (),
    "nodes": (),
}
_INT_KEYS: Final = {
    "register": ("status", "dirty_timestamp", "latest_timestamp", "reg_timestamp"),
    "renew": ("dirty_timestamp",),
    "cancel": ("latest_timestamp",),
    "set": ("status", "set_timestamp"),
    "fetch": ("status",),
    "fetchs": ("status",),
    "poll": ("latest_timestamp",),
    "polls": ("latest_timestamp",),
    "fetch/all": (),
    "nodes": (),
}
_BOOL_KEYS: Final = ("replication", "from_zone")
_REQUIRED: Final = {
    "register": ("zone", "env", "appid", "hostname", "status", "addrs"),
    "renew": ("zone", "env", "appid", "hostname"),
    "cancel": ("zone", "env", "appid", "hostname"),
    "set": ("zone", "env", "appid", "hostname"),
    "fetch": ("env", "appid", "status"),
    "fetchs": ("env", "appid", "status"),
    "poll": ("env", "appid", "hostname", "latest_timestamp"),
    "polls": ("env", "appid", "hostname", "latest_timestamp"),
    "fetch/all": (),
    "nodes": (),
}

_CONTENT_TYPES: Final = (
    b"application/x-www-form-urlencoded",
    b"application/x-www-form-urlencoded; charset=utf-8",
    b"application/json",
    b"multipart/form-data; boundary=xyz",
    b"text/plain",
    b"application/octet-stream",
    b"APPLICATION/X-WWW-FORM-URLENCODED",
    None,
)
_POLL_TIMEOUTS: Final = (b"50", b"50", b"50", b"0", b"", b"abc", b"-1", b"\xb2", b"99999999", b"1" * 5000)


# -- value strategies (each yields an already-encoded token for the wire) --------------------------


def _enc(text: str) -> str:
    """Percent-encode text; surrogates become the (invalid) UTF-8 bytes Go would receive."""
    return quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")


_RAW_GARBAGE: Final = st.one_of(
    st.sampled_from(["%", "%4", "%zz", "%G0", "a%", "%%", "%u00e9", "a;b", ";", "%3B", "%00", "%FF%FE", "+"]),
    st.binary(max_size=24).map(lambda b: quote_from_bytes(b, safe="")),
)
_TEXT: Final = st.text(max_size=16).map(_enc)
_INTS: Final = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
    st.integers(min_value=-3, max_value=5).map(str),
    st.sampled_from(
        [
            "",
            "+5",
            "-0",
            "007",
            "0x10",
            "1.5",
            " 1",
            "1_000",
            "١",
            "²",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "4294967296",
            "1" * 5000,
            "0" * 5000 + "1",
            "99999999999999999999x",
        ]
    ).map(_enc),
)
_BOOLS: Final = st.sampled_from(["1", "t", "T", "true", "TRUE", "True", "0", "false", "yes", "", "on"])
_NASTY_METADATA: Final = st.sampled_from(
    [
        '{"weight":"10"}',
        '{"weight":10,"color":"red"}',
        '{"a":{"b":"c"},"n":null}',
        "[1,2]",
        "null",
        '"s"',
        "123",
        "true",
        "{",
        "NaN",
        '{"a":"\\ud800"}',
        '{"\\udc00":"x"}',
        "[" * 3000,
        '{"a":' + "[" * 2000 + "]" * 2000 + "}",
        '{"a":' + "1" * 5000 + "}",
        '{"a":1e400}',
        "",
    ]
)
_METADATA: Final = st.one_of(
    _NASTY_METADATA,
    _NASTY_METADATA,
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3).map(json.dumps),
    st.text(max_size=20),
).map(_enc)

_POOLS: Final = {
    "zone": ["sh001", "z2"],
    "env": ["dev", "fz"],
    "appid": ["fz.a", "fz.b", "infra.discovery"],
    "hostname": ["h1", "h2", "node-test"],
    "region": ["sh", ""],
    "addrs": ["http://10.0.0.1:8000", "grpc://10.0.0.2:9000,http://10.0.0.2:8000", ""],
    "version": ["v1", ""],
}


def _token(key: str) -> st.SearchStrategy[str]:
    """A value for ``key``: mostly sensible for its type, sometimes garbage."""
    if key in _BOOL_KEYS:
        typed: st.SearchStrategy[str] = _BOOLS
    elif key == "metadata":
        typed = _METADATA
    elif key in ("status", "latest_timestamp") or key.endswith("_timestamp"):
        typed = _INTS if key != "status" else st.one_of(st.sampled_from(["1", "2", "3"]), _INTS)
    else:
        pool = _POOLS.get(key, ["x"])
        typed = st.one_of(st.sampled_from(pool).map(_enc), _TEXT)
    return st.one_of(typed, typed, typed, _RAW_GARBAGE)


def _keys(endpoint: str) -> tuple[str, ...]:
    return (*_STR_KEYS[endpoint], *_INT_KEYS[endpoint], *_BOOL_KEYS, "unknown_key")


def _env_ok(pairs: list[tuple[str, str]]) -> bool:
    """The fuzzer never touches the guarded env (however it is spelled on the wire)."""
    return all(k != "env" or GUARDED_ENV not in v.lower() for k, v in pairs)


_VALID: Final = {
    "status": st.sampled_from(["1", "2", "3"]),
    "latest_timestamp": st.one_of(
        st.sampled_from(["0", "1", "9223372036854775807"]),
        st.integers(min_value=0, max_value=(1 << 63) - 1).map(str),
    ),
    "metadata": _METADATA,
}


def _valid(key: str) -> st.SearchStrategy[str]:
    """A well-formed value for ``key`` (from small pools, so that writes and reads meet)."""
    if key in _VALID:
        return _VALID[key]
    return st.sampled_from([v for v in _POOLS.get(key, ["x"]) if v]).map(_enc)


@st.composite
def _params(draw: st.DrawFn, endpoint: str) -> list[tuple[str, str]]:
    """A parameter list: a well-formed request, mutated (keys dropped or given random values,
    extra and repeated pairs added), or entirely random pairs."""
    keys = _keys(endpoint)
    extra = draw(
        st.lists(st.sampled_from(keys).flatmap(lambda k: st.tuples(st.just(k), _token(k))), max_size=6)
    )
    mode = draw(st.sampled_from(["valid", "valid", "mutated", "mutated", "random"]))
    if mode == "random":
        return extra
    required = list(_REQUIRED[endpoint])
    if endpoint == "register" and draw(st.booleans()):
        required.append("metadata")
    base = [(k, draw(_valid(k))) for k in required]
    if mode == "mutated" and base:
        positions: list[int] = draw(st.lists(st.integers(0, len(base) - 1), max_size=3))
        for i in positions:
            key = base[i][0]
            base[i] = (key, draw(st.one_of(_token(key), st.just(""))))
        drop: bool = draw(st.booleans())
        if drop:
            del base[draw(st.integers(0, len(base) - 1))]
    else:
        extra = [(k, v) for k, v in extra if k not in required]  # keep it well-formed
    return extra + base if draw(st.booleans()) else base + extra


@dataclass(frozen=True, repr=False)
class Req:
    endpoint: str
    method: str
    path: bytes
    query: bytes
    body: bytes
    content_type: bytes | None
    headers: tuple[tuple[bytes, bytes], ...]
    expect: int  # HTTP status expected: 200, 404 or 405

    def __repr__(self) -> str:
        return f"<{self.describe()} expect={self.expect}>"

    def describe(self) -> str:
        return (
            f"{self.method} {self.path!r}?{self.query[:300]!r} "
            f"ct={self.content_type!r} body={self.body[:300]!r} headers={self.headers!r}"
        )


@st.composite
def _request(draw: st.DrawFn, endpoints: tuple[str, ...]) -> Req:
    endpoint = draw(st.sampled_from(endpoints))
    method = ROUTES[endpoint]
    pairs = draw(_params(endpoint).filter(_env_ok))
    encoded = "&".join(f"{k}={v}" if v or draw(st.booleans()) else k for k, v in pairs).encode("ascii")
    query, body, ctype = b"", b"", None
    where = draw(st.sampled_from(["query", "body", "split", "raw"] if method == "POST" else ["query", "raw"]))
    if where == "query":
        query = encoded
    elif where == "body":
        body, ctype = encoded, b"application/x-www-form-urlencoded"
    elif where == "split":
        cut = draw(st.integers(0, len(pairs)))
        query = "&".join(f"{k}={v}" for k, v in pairs[:cut]).encode()
        body = "&".join(f"{k}={v}" for k, v in pairs[cut:]).encode()
        ctype = draw(st.sampled_from(_CONTENT_TYPES))
    else:  # random bytes under a random content type, maybe with a query string too
        query = encoded if draw(st.booleans()) else b""
        body = draw(st.binary(max_size=200))
        ctype = draw(st.sampled_from(_CONTENT_TYPES))
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if endpoint in ("poll", "polls"):
        headers = ((b"x1-bmspy-timeout", draw(st.sampled_from(_POLL_TIMEOUTS))),)
    path = b"/discovery/" + endpoint.encode()
    expect = 200
    mutation = draw(st.integers(0, 19))
    if mutation == 0:
        method, expect = ("GET" if method == "POST" else "POST"), 405
    elif mutation == 1:
        path, expect = path + b"/" + draw(st.sampled_from([b"x", b"", b"all/x", b"%2e%2e"])), 404
    return Req(endpoint, method, path, query, body, ctype, headers, expect)


# -- a raw HTTP/1.1 client -------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RawClient:
    host: str
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    sent: int = field(default=0)

    async def request(
        self,
        method: str,
        target: bytes,
        *,
        body: bytes = b"",
        content_type: bytes | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: fuzz"]
        lines += [b"%s: %s" % kv for kv in headers]
        if content_type is not None:
            lines.append(b"Content-Type: " + content_type)
        if body or method == "POST":
            lines.append(b"Content-Length: %d" % len(body))
        self.writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        self.sent += 1
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), ANSWER_TIMEOUT)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise AssertionError(f"connection dropped without an answer: {exc!r}") from None
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT} s") from None
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        hdrs = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        length = int(hdrs["content-length"])
        data = await asyncio.wait_for(self.reader.readexactly(length), ANSWER_TIMEOUT)
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return Answer(int(status_line.split(" ")[1]), hdrs, data)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def check_answer(req: Req, ans: Answer) -> None:
    where = req.describe()
    if req.expect != 200:
        assert ans.status == req.expect, (ans.status, ans.body[:200], where)
        assert ans.headers["content-type"].startswith("text/plain"), where
        return
    assert ans.status == 200, (ans.status, ans.body[:500], where)
    assert ans.headers["content-type"] == "application/json; charset=utf-8", where
    try:
        doc = orjson.loads(ans.body)
    except orjson.JSONDecodeError:
        raise AssertionError(f"not JSON: {ans.body[:300]!r} for {where}") from None
    assert isinstance(doc, dict), where
    code = doc.get("code")
    assert code in CODES[req.endpoint], (code, doc.get("message"), where)
    assert isinstance(doc.get("message"), str), where
    if "ttl" in doc:
        assert doc["ttl"] == 1, where
    mirrored = ans.headers.get("kratos-status-code")
    if mirrored is not None:
        assert mirrored == str(code), (mirrored, code, where)


def check_registry(node: Node) -> None:
    """Structural invariants of the registry (spec §2.1)."""
    reg = node.registry
    stored = 0
    for key, app in reg.apps.items():
        assert key == (app.appid, app.env), key
        assert app.zones, f"app {key} has no zones"
        assert app.latest > 0, f"app {key} latest {app.latest}"
        for zone, hosts in app.zones.items():
            assert hosts, f"app {key} zone {zone!r} has no hosts"
            for hostname, ins in hosts.items():
                assert ins.key == (app.appid, app.env, zone, hostname), (ins.key, key, zone, hostname)
                assert ins.status in (1, 2), ins
                assert ins.addrs, ins
                wire.dumps(wire.instance_obj(ins))  # every stored instance must stay encodable
                stored += 1
    assert reg.size == stored, (reg.size, stored)


# -- the harness -----------------------------------------------------------------------------------


class Harness:
    """One node running in a background task of a private loop, and a client for it."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.started: asyncio.Future[Node] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._hold())
        self.node: Node | None = None
        self.client: RawClient | None = None

    async def _hold(self) -> None:
        async with self._node() as node:
            self.started.set_result(node)
            await self.stop.wait()

    @staticmethod
    @contextlib.asynccontextmanager
    async def _node() -> AsyncIterator[Node]:
        async with running_node(fast_config(poll_hold=0.2)) as n:
            yield n

    async def ready(self) -> None:
        waiter = asyncio.ensure_future(asyncio.shield(self.started))
        pending: list[asyncio.Future[Any]] = [waiter, self.task]
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            waiter.cancel()
            await self.task  # re-raises the start-up failure
        self.node = self.started.result()
        host, port = self.node.address.rsplit(":", 1)
        self.client = RawClient(host, int(port))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        self.stop.set()
        await self.task

    async def call(self, req: Req) -> Answer:
        assert self.client is not None
        target = req.path + (b"?" + req.query if req.query else b"")
        return await self.client.request(
            req.method, target, body=req.body, content_type=req.content_type, headers=req.headers
        )

    async def get_json(self, endpoint: str, query: str = "") -> Any:
        req = Req(endpoint, "GET", b"/discovery/" + endpoint.encode(), query.encode(), b"", None, (), 200)
        ans = await self.call(req)
        check_answer(req, ans)
        return orjson.loads(ans.body)

    async def run_example(self, reqs: list[Req]) -> None:
        for req in reqs:
            check_answer(req, await self.call(req))
        # The whole registry must still be readable after every example.
        doc = await self.get_json("fetch/all")
        assert doc["code"] == 0, doc

    async def register_guarded(self) -> None:
        assert self.client is not None
        guarded = [
            ("guard.a", "sh001", "g1", "1", '{"weight":"10","color":"red"}'),
            ("guard.a", "sh001", "g2", "2", ""),
            ("guard.a", "z2", "g1", "1", "[1]"),
            ("guard.b", "sh001", "h1", "1", '{"x":"y"}'),
            ("fz.a", "sh001", "h1", "2", ""),  # a fuzzer appid, but in the guarded env
        ]
        for appid, zone, host, status, meta in guarded:
            form = (
                f"zone={zone}&env={GUARDED_ENV}&appid={appid}&hostname={host}&status={status}"
                f"&addrs=http%3A%2F%2F10.9.9.9%3A1&addrs=grpc%3A%2F%2F10.9.9.9%3A2&version=v9"
                f"&metadata={_enc(meta)}"
            )
            req = Req(
                "register", "POST", b"/discovery/register", b"", form.encode(), _CONTENT_TYPES[0], (), 200
            )
            ans = await self.call(req)
            assert orjson.loads(ans.body)["code"] == 0, ans.body

    async def guarded_view(self) -> tuple[Any, ...]:
        """The guarded apps as the wire shows them, and as the registry stores them."""
        assert self.node is not None
        fetched = [
            await self.get_json("fetch", f"env={GUARDED_ENV}&appid={a}&status=3")
            for a in ("guard.a", "guard.b", "fz.a")
        ]
        fetchs = await self.get_json(
            "fetchs", f"env={GUARDED_ENV}&appid=guard.a&appid=guard.b&appid=fz.a&status=3"
        )
        all_doc = await self.get_json("fetch/all")
        in_all = {
            appid: [i for i in all_doc["data"].get(appid, []) if i["env"] == GUARDED_ENV]
            for appid in ("guard.a", "guard.b", "fz.a")
        }
        reg = self.node.registry
        stored = {
            key: (
                app.latest,
                {z: {h: i.to_wire() for h, i in hosts.items()} for z, hosts in app.zones.items()},
            )
            for key, app in reg.apps.items()
            if key[1] == GUARDED_ENV
        }
        return fetched, fetchs, in_all, stored


def _fuzz(endpoints: tuple[str, ...], max_examples: int, corpus: tuple[list[Req], ...] = ()) -> None:
    """Run ``corpus`` (fixed request lists) then ``max_examples`` generated ones against one node."""
    with asyncio.Runner() as runner:

        async def start() -> Harness:
            h = Harness()
            await h.ready()
            return h

        harness = runner.run(start())
        try:
            runner.run(harness.register_guarded())
            before = runner.run(harness.guarded_view())
            assert harness.node is not None
            node = harness.node
            assert len(before[3]) == 3, before[3]  # guard.a, guard.b, fz.a in the guarded env
            assert all(doc["code"] == 0 for doc in before[0]), before[0]

            def run(reqs: list[Req]) -> None:
                runner.run(harness.run_example(reqs))
                check_registry(node)

            for reqs in corpus:
                run(reqs)
            if max_examples:
                settings(
                    max_examples=max_examples,
                    deadline=None,
                    database=None,
                    suppress_health_check=[
                        HealthCheck.function_scoped_fixture,
                        HealthCheck.too_slow,
                        HealthCheck.data_too_large,
                        HealthCheck.filter_too_much,
                    ],
                )(given(st.lists(_request(endpoints), min_size=1, max_size=4))(run))()
            after = runner.run(harness.guarded_view())
            assert after == before
            check_registry(node)
        finally:
            runner.run(harness.close())


def _nasty(endpoint: str, query: str = "", body: str = "", header: bytes | None = None) -> Req:
    method = ROUTES[endpoint]
    headers = ((b"x1-bmspy-timeout", header),) if header is not None else ()
    ctype = _CONTENT_TYPES[0] if body else None
    return Req(
        endpoint,
        method,
        b"/discovery/" + endpoint.encode(),
        query.encode(),
        body.encode(),
        ctype,
        headers,
        200,
    )


def _enc_set(meta: str) -> str:
    return f"zone=sh001&env=dev&appid=fz.a&hostname=h9&metadata={_enc(meta)}"


_REG_FORM: Final = "zone=sh001&env=dev&appid=fz.a&hostname=h9&status=1&addrs=http%3A%2F%2F10.0.0.9%3A1"
_HUGE: Final = "1" * 5000

#: Requests that once broke a node (each list runs as one example, then the registry is checked).
CORPUS: Final = (
    [_nasty("fetch", f"env=dev&appid=fz.a&status={_HUGE}")],
    [_nasty("renew", f"zone=sh001&env=dev&appid=fz.a&hostname=h1&dirty_timestamp={_HUGE}")],
    [_nasty("polls", f"env=dev&appid=fz.a&hostname=c&latest_timestamp={'0' * 5000}1")],
    [_nasty("polls", "env=dev&appid=nope&hostname=c&latest_timestamp=0", header=b"\xb2")],
    [_nasty("poll", "env=dev&appid=nope&hostname=c", header=b"1" * 5000)],
    [_nasty("register", body=_REG_FORM + "&metadata=" + _enc('{"a":"\\ud800"}'))],
    [_nasty("register", body=_REG_FORM + "&metadata=" + _enc("[" * 3000))],
    [_nasty("register", body=_REG_FORM + "&metadata=" + _enc('{"a":' + _HUGE + "}"))],
    [
        _nasty("register", body=_REG_FORM),
        _nasty("set", body=_enc_set('{"a":' + "[" * 3000 + "]" * 3000 + "}")),
    ],
    [_nasty("fetch/all", "x=%zz"), _nasty("nodes", "a;b=1")],
)


def test_known_nasty_requests() -> None:
    _fuzz((), 0, CORPUS)


def test_fuzz_write_endpoints() -> None:
    _fuzz(("register", "renew", "cancel", "set"), 300)


def test_fuzz_read_endpoints() -> None:
    _fuzz(("fetch", "fetchs", "fetch/all", "nodes", "register"), 250)


def test_fuzz_long_polls() -> None:
    _fuzz(("poll", "polls", "register", "cancel"), 150)
