"""Setup calls against a node (small synchronous HTTP requests, not timed) and the instances registered.

Standard library only: ``bench/sdk_poll.py`` imports it while running against another source tree.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

FORM = "application/x-www-form-urlencoded"
ZONE = "sh001"
ENV = "dev"


def http_call(addr: str, method: str, path: str, form: Sequence[tuple[str, str]] = ()) -> tuple[int, bytes]:
    """One request on a fresh connection: ``form`` is the urlencoded body (POST) or query (GET)."""
    host, _, port = addr.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        if method == "POST":
            conn.request(method, path, body=urlencode(form), headers={"Content-Type": FORM})
        else:
            conn.request(method, path + ("?" + urlencode(form) if form else ""))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def api(addr: str, method: str, path: str, form: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """:func:`http_call` whose answer must be HTTP 200 with ``code 0``; the decoded answer."""
    status, body = http_call(addr, method, path, form)
    obj = json.loads(body) if body else None
    if status != 200 or not isinstance(obj, dict) or obj.get("code") != 0:
        raise RuntimeError(f"{method} {path} -> HTTP {status} {body[:300]!r}")
    return obj


@dataclass(slots=True)
class Spec:
    """One instance to register (realistic field sizes)."""

    appid: str
    hostname: str
    addrs: list[str]
    zone: str = ZONE
    env: str = ENV
    region: str = "sh"
    version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def form(self) -> list[tuple[str, str]]:
        """The ``/discovery/register`` form of this instance (status 1)."""
        f = [
            ("region", self.region),
            ("zone", self.zone),
            ("env", self.env),
            ("appid", self.appid),
            ("hostname", self.hostname),
            ("status", "1"),
            *(("addrs", a) for a in self.addrs),
            ("version", self.version),
        ]
        if self.metadata:
            f.append(("metadata", json.dumps(self.metadata, separators=(",", ":"))))
        return f


def service_instance(appid: str, i: int, *, zone: str = ZONE) -> Spec:
    """A production-looking instance: pod-style hostname, grpc+http addrs, version, metadata."""
    ip = f"10.{20 + i // 250 % 200}.{(i * 7) % 250}.{1 + i % 250}"
    return Spec(
        appid=appid,
        zone=zone,
        hostname=f"{appid.rsplit('.', 1)[-1].split('-', maxsplit=1)[0]}-7f9c4-{i:05x}",
        addrs=[f"grpc://{ip}:9000", f"http://{ip}:8000"],
        version=f"v1.14.{i % 10}",
        metadata={"weight": "10"},
    )


def register(addr: str, spec: Spec) -> dict[str, Any]:
    """``POST /discovery/register`` of ``spec``; the answer (``code 0``, else RuntimeError)."""
    return api(addr, "POST", "/discovery/register", spec.form())


def fetch_hosts(addr: str, appid: str) -> set[str]:
    """Hostnames of ``appid`` (status 1) on one node; empty when the node does not know the app."""
    _, body = http_call(addr, "GET", "/discovery/fetch", [("env", ENV), ("appid", appid), ("status", "1")])
    obj = json.loads(body)
    if obj.get("code") != 0:
        return set()
    return {i["hostname"] for items in obj["data"]["instances"].values() for i in items}


def parse_metrics(text: str) -> dict[str, float]:
    """``/metrics`` samples by name with labels: ``discoverd_replication_pending{peer="…"}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metrics(addr: str) -> dict[str, float]:
    """The node's ``/metrics`` samples (:func:`parse_metrics`)."""
    status, body = http_call(addr, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics on {addr} -> HTTP {status}")
    return parse_metrics(body.decode())
