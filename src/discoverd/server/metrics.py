"""The Prometheus exposition of a node's metrics (``GET /metrics``), read from its state at scrape time.

The one module that imports ``prometheus_client``. The node does not import it when it starts: its
``/metrics`` route (:class:`~discoverd.server.metrics_route.Metrics`) builds an :class:`Exposition`
at the first scrape, so a node nobody scrapes never loads prometheus_client.

:class:`Exposition` gives each node its own :class:`~prometheus_client.CollectorRegistry` (several
nodes may share a process; the global ``REGISTRY`` is never used) holding a :class:`NodeCollector`,
which reads the registry, the counters, the guard, the held polls, the replication queues and the
snapshot state only when ``/metrics`` is scraped, and a :class:`HttpCollector` for the connections:
nothing is done per protocol request, except the latency histogram (the pipeline's metrics stage,
:class:`~discoverd.server.latency.LatencyTable`), exported here as a normal Prometheus histogram.
Every metric is described in ``docs/metrics.md``.
"""

from __future__ import annotations

import importlib.metadata
import operator
import platform
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from discoverd.core.registry_state import App
from discoverd.errors import MissingExtra
from discoverd.model import UP, WAITING
from discoverd.server.http import HttpServer
from discoverd.server.latency import LatencyTable
from discoverd.server.parts import NodeParts
from discoverd.server.peers import NODE_UP
from discoverd.server.xds.stats import KINDS, XdsStats

try:
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import Collector
except ImportError as exc:
    raise MissingExtra("prometheus_client", "server", "the server's /metrics") from exc

__all__ = [
    "COUNTERS",
    "CollectorRegistry",
    "Exposition",
    "HttpCollector",
    "NodeCollector",
    "RegistryCounts",
    "XdsCollector",
    "latency_family",
]

#: ``Counters`` field → (metric name without ``_total``, help).
COUNTERS: Final = {
    "registers": (
        "discoverd_registers",
        "Registers applied (new or replaced instances, replicated ones too).",
    ),
    "renews": ("discoverd_renews", "Renew requests (including those answered -404)."),
    "cancels": ("discoverd_cancels", "Cancels that removed an instance."),
    "sets": ("discoverd_sets", "Set requests that passed parameter binding (including refused ones)."),
    "poll_answers": ("discoverd_poll_answers", "Long polls answered with changes (at once or when woken)."),
    "poll_not_modified": ("discoverd_poll_not_modified", "Long polls answered -304 (hold expired)."),
    "poll_refused": ("discoverd_polls_refused", "Long polls refused -503 because max_polls were held."),
    "evictions": ("discoverd_evictions", "Instances removed by eviction passes."),
}

_STATUS_NAMES: Final = {UP: "up", WAITING: "waiting"}
_status: Final = operator.attrgetter("status")


def latency_family(table: LatencyTable) -> HistogramMetricFamily:
    """The histogram ``discoverd_request_duration_seconds{endpoint}`` (cumulative buckets) of ``table``."""
    fam = HistogramMetricFamily(
        "discoverd_request_duration_seconds",
        "Time spent in protocol handlers for requests answered at once (held polls excluded).",
        labels=["endpoint"],
    )
    edges = [*(repr(float(b)) for b in table.bounds), "+Inf"]  # Go float formatting
    for path, counts, total in table.rows():
        running, buckets = 0.0, []
        for edge, n in zip(edges, counts, strict=True):
            running += n
            buckets.append((edge, running))
        fam.add_metric([path], buckets, total)
    return fam


OTHER: Final = "other"
"""The label value that env and zone values beyond ``max_label_values`` are summed under."""


@dataclass(slots=True)
class RegistryCounts:
    """Instances by (env, zone, status) and apps by (env, zone) and env, read from the registry."""

    instances: dict[tuple[str, str, str], int] = field(default_factory=dict)
    apps_by_zone: dict[tuple[str, str], int] = field(default_factory=dict)
    apps_by_env: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, apps: Iterable[App]) -> RegistryCounts:
        out = cls()
        for app in apps:
            env = app.env
            out.apps_by_env[env] = out.apps_by_env.get(env, 0) + 1
            for zone, hosts in app.zones.items():
                out.apps_by_zone[(env, zone)] = out.apps_by_zone.get((env, zone), 0) + 1
                for status, n in Counter(map(_status, hosts.values())).items():  # C loops: ~30 ns each
                    key = (env, zone, _STATUS_NAMES.get(status, OTHER))
                    out.instances[key] = out.instances.get(key, 0) + n
        return out

    def folded(self, cap: int) -> RegistryCounts:
        """The same counts with at most ``cap`` env and ``cap`` zone label values: the values with
        the most instances (ties by name) keep their name, the rest are summed under ``other``.

        Env and zone are chosen by clients, so without this one client could make one series per
        value it invents.
        """
        envs = _top(self.instances, 0, cap)
        zones = _top(self.instances, 1, cap)
        out = RegistryCounts()
        for (env, zone, status), n in self.instances.items():
            key = (envs.get(env, OTHER), zones.get(zone, OTHER), status)
            out.instances[key] = out.instances.get(key, 0) + n
        for (env, zone), n in self.apps_by_zone.items():
            key2 = (envs.get(env, OTHER), zones.get(zone, OTHER))
            out.apps_by_zone[key2] = out.apps_by_zone.get(key2, 0) + n
        for env, n in self.apps_by_env.items():
            label = envs.get(env, OTHER)
            out.apps_by_env[label] = out.apps_by_env.get(label, 0) + n
        return out


def _top(instances: dict[tuple[str, str, str], int], part: int, cap: int) -> dict[str, str]:
    """The ``cap`` values of label ``part`` (0 env, 1 zone) with the most instances, each to itself."""
    totals: dict[str, int] = {}
    for key, n in instances.items():
        totals[key[part]] = totals.get(key[part], 0) + n
    kept = sorted(totals, key=lambda v: (-totals[v], v))[:cap]
    return {v: v for v in kept}


class NodeCollector(Collector):
    """Reads one node's state at scrape time; see ``docs/metrics.md`` for every family."""

    def __init__(self, parts: NodeParts, latency: LatencyTable, started: float) -> None:
        self.parts = parts
        self.latency = latency
        self.started = started
        """When the node was assembled (Unix time): ``discoverd_start_time_seconds``."""

    def __repr__(self) -> str:
        return f"<NodeCollector {self.parts.config.advertise}>"

    def describe(self) -> list[Metric]:
        return []  # nothing to check for name clashes: the registry is this node's alone

    def collect(self) -> Iterator[Metric]:
        yield from self._info()
        yield from self._registry()
        yield from self._events()
        yield from self._guard()
        yield from self._replication()
        yield from self._snapshot()
        yield latency_family(self.latency)

    def _info(self) -> Iterator[Metric]:
        c = self.parts.config
        build = GaugeMetricFamily(
            "discoverd_build_info", "Always 1: the discoverd version.", labels=["version", "python"]
        )
        build.add_metric([_version(), platform.python_version()], 1)
        node = GaugeMetricFamily(
            "discoverd_node_info",
            "Always 1: this node's identity.",
            labels=["region", "zone", "env", "hostname", "advertise"],
        )
        node.add_metric([c.region, c.zone, c.env, c.hostname, c.advertise], 1)
        start = GaugeMetricFamily("discoverd_start_time_seconds", "When the node started (Unix time).")
        start.add_metric([], self.started)
        yield from (build, node, start)

    def _registry(self) -> Iterator[Metric]:
        reg = self.parts.registry
        yield _gauge("discoverd_instances", "Registered instances (every env and zone).", reg.size)
        yield _gauge("discoverd_apps", "Registered (appid, env) pairs.", len(reg.apps))
        counts = RegistryCounts.of(reg.apps.values()).folded(self.parts.config.max_label_values)
        fam = GaugeMetricFamily(
            "discoverd_instances_by_zone",
            "Instances by env, zone and status.",
            labels=["env", "zone", "status"],
        )
        for labels, n in sorted(counts.instances.items()):
            fam.add_metric(list(labels), n)
        yield fam
        fam = GaugeMetricFamily(
            "discoverd_apps_by_zone", "Apps with at least one instance in the zone.", labels=["env", "zone"]
        )
        for labels2, n in sorted(counts.apps_by_zone.items()):
            fam.add_metric(list(labels2), n)
        yield fam
        fam = GaugeMetricFamily("discoverd_apps_by_env", "Apps by env.", labels=["env"])
        for env, n in sorted(counts.apps_by_env.items()):
            fam.add_metric([env], n)
        yield fam

    def _events(self) -> Iterator[Metric]:
        for counter, value in self.parts.counters.as_dict().items():
            name, doc = COUNTERS.get(counter, (f"discoverd_{counter}", f"The node's {counter} count."))
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], value)
            yield fam
        yield _gauge(
            "discoverd_held_polls", "Requests held now (long polls, dashboard).", self.parts.parking.count
        )
        yield _gauge(
            "discoverd_held_polls_limit",
            "max_polls: held polls beyond it are refused.",
            self.parts.config.max_polls,
        )

    def _guard(self) -> Iterator[Metric]:
        p = self.parts
        g = p.registry.guard
        held = max(0.0, (p.lifecycle.no_evict_until - p.clock()) / 1e9)
        yield _gauge("discoverd_guard_expected_renews", "Renews expected per guard window.", g.expected)
        yield _gauge("discoverd_guard_needed_renews", "Renews needed per window to allow eviction.", g.needed)
        yield _gauge(
            "discoverd_guard_threshold", "Share of expected renews needed (protect_threshold).", g.threshold
        )
        yield _gauge(
            "discoverd_guard_renews_last_window", "Renews counted in the last closed window.", g.last_window
        )
        yield _gauge(
            "discoverd_guard_renews_this_window",
            "Renews counted so far in the current window.",
            g.this_window,
        )
        yield _gauge(
            "discoverd_guard_protecting", "1 while self-preservation suspends eviction.", int(g.protecting)
        )
        yield _gauge(
            "discoverd_startup_protect",
            "1 while start-up protect refuses reads (-500).",
            int(p.lifecycle.protected),
        )
        yield _gauge(
            "discoverd_eviction_held_seconds", "Seconds left without eviction after a restore.", held
        )

    def _replication(self) -> Iterator[Metric]:
        rep = self.parts.replicator
        stats = rep.stats()
        peers = rep.peers()
        pending = GaugeMetricFamily(
            "discoverd_replication_pending", "Operations queued for the peer.", labels=["peer"]
        )
        up = GaugeMetricFamily(
            "discoverd_replication_peer_up", "1 if the peer's last answer was not a failure.", labels=["peer"]
        )
        counters = {
            field: CounterMetricFamily(f"discoverd_replication_{field}", doc, labels=["peer"])
            for field, doc in (
                ("sent", "Operations the peer answered."),
                ("failed", "Sends that failed (transport error or timeout; retried)."),
                ("dropped", "Operations dropped: queue overflow, 10 failed attempts, or the peer left."),
            )
        }
        lag = GaugeMetricFamily(
            "discoverd_replication_lag_seconds",
            "Age of the oldest change not yet sent to the peer (0 when nothing is queued).",
            labels=["peer"],
        )
        lags = rep.lag()
        for name, s in sorted(stats.items()):
            pending.add_metric([name], s["pending"])
            lag.add_metric([name], lags.get(name, 0.0))
            for counter, fam in counters.items():
                fam.add_metric([name], s[counter])
            peer = peers.get(name)
            if peer is not None:
                up.add_metric([name], int(peer.status == NODE_UP))
        yield from (pending, lag, up, *counters.values())
        ignored = CounterMetricFamily(
            "discoverd_peers_ignored",
            "infra.discovery registrations not made replication peers (over the caps, or not "
            "authenticated as a peer while a peer secret is set).",
        )
        ignored.add_metric([], self.parts.membership.ignored)
        yield ignored

    def _snapshot(self) -> Iterator[Metric]:
        p = self.parts.persistence
        if p is None:
            return
        yield _gauge(
            "discoverd_snapshot_unsaved_changes",
            "1 when the registry changed since the last snapshot was written.",
            int(p.unsaved),
        )
        if p.saved_at > 0:
            now = self.parts.clock()
            yield _gauge(
                "discoverd_snapshot_age_seconds",
                "Seconds since the last snapshot was written.",
                (now - p.saved_at) / 1e9,
            )
            yield _gauge(
                "discoverd_snapshot_last_save_timestamp_seconds",
                "When the last snapshot was written.",
                p.saved_at / 1e9,
            )


class XdsCollector(Collector):
    """The xDS server's streams, pushes, ACKs and NACKs per resource type, read at scrape time."""

    def __init__(self, stats: Callable[[], XdsStats]) -> None:
        self.stats = stats

    def __repr__(self) -> str:
        return f"<XdsCollector {self.stats!r}>"

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        yield _gauge("discoverd_xds_streams", "Open xDS (ADS) streams.", s.streams)
        for name, doc, value in (
            ("discoverd_xds_streams_opened", "xDS streams accepted.", s.streams_opened),
            ("discoverd_xds_streams_refused", "xDS streams refused for a missing or bad token.", s.refused),
            ("discoverd_xds_encodings", "xDS resources encoded (once per change).", s.encodings),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, by_kind in (
            ("discoverd_xds_pushes", "xDS responses sent, by resource type.", s.pushes),
            ("discoverd_xds_acks", "xDS responses accepted by clients, by resource type.", s.acks),
            ("discoverd_xds_nacks", "xDS responses rejected by clients, by resource type.", s.nacks),
        ):
            fam = CounterMetricFamily(name, doc, labels=["type"])
            for kind in KINDS:
                fam.add_metric([kind], by_kind[kind])
            yield fam


class HttpCollector(Collector):
    """The HTTP front's connections, read at scrape time."""

    def __init__(self, http: HttpServer) -> None:
        self.http = http

    def __repr__(self) -> str:
        return f"<HttpCollector {self.http!r}>"

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        t = self.http.table
        yield _gauge("discoverd_http_connections", "Open client connections.", len(t.connections))
        yield _gauge(
            "discoverd_http_connections_limit", "max_connections: open connections beyond it are refused.",
            t.admission.max_connections,
        )  # fmt: skip
        refused = CounterMetricFamily(
            "discoverd_http_connections_refused",
            "Connections closed at once: the node was full, or under pressure and their address at "
            "max_conns_per_host.",
            labels=["reason"],
        )
        refused.add_metric(["full"], t.admission.refused_full)
        refused.add_metric(["host"], t.admission.refused_host)
        yield refused
        expired = CounterMetricFamily(
            "discoverd_http_connections_expired",
            "Connections closed past a deadline (headers, body, idle keep-alive, unread answers).",
            labels=["deadline"],
        )
        for why, n in sorted(t.expired.items()):
            expired.add_metric([why], n)
        yield expired
        yield CounterMetricFamily(
            "discoverd_http_accept_errors", "Failed accepts (e.g. out of file descriptors).",
            value=t.accept_errors.total,
        )  # fmt: skip


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _version() -> str:
    try:
        return importlib.metadata.version("discoverd")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


class Exposition:
    """The Prometheus side of one node's metrics: its own collector registry and the text it serves.

    Built at the first scrape by :class:`~discoverd.server.metrics_route.Metrics`.
    """

    def __init__(
        self, parts: NodeParts, latency: LatencyTable, http: HttpServer | None, *, started: float
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(parts, latency, started))
        if parts.xds is not None:
            self.registry.register(XdsCollector(parts.xds.stats))
        if http is not None:
            self.registry.register(HttpCollector(http))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def __repr__(self) -> str:
        return f"<Exposition {self.registry!r}>"

    def render(self, accept: str) -> tuple[bytes, bytes]:
        """The metrics in the text format (OpenMetrics when ``accept`` asks for it), and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type.encode()
