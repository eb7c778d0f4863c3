"""go-micro's Merge/Remove and the registry state of one gossip node (what go-micro's update and expiry loops
keep), I/O-free.

**Merge/Remove** implement go-micro's *intended* semantics, not its code: :func:`merge` replaces/extends the
matching version and keeps every other one (Go's ``Merge`` drops the versions stored after the match, spec
2.4); the merged version takes metadata/endpoints from the new service (Go keeps the old ones).

Time is passed in as ``now_ns``: wall-clock Unix nanoseconds, because ``expires`` on the wire is the
*sender's* absolute wall-clock time and must be compared with ours (wire compatibility).

**Events.** Every change returns discoverd watch :class:`~discoverd.model.Event` s, computed with
:func:`~discoverd.model.diff_instances` between the instances of the service name before and after, keyed by
**hostname** (= node id). So a changed node is an ``update`` and a node moving to another version is an
``update`` too (not delete + create), as the registry contract wants for a re-registration.

**Deliberate differences from go-micro** (spec 2.4, 2.6, 2.9):

* *A node id lives in one version of a service*: a create for node X of version B removes X from the other
  versions of that name (and their expiry records). Go keeps both; go-micro node ids are per process and a
  process has one version, so Go peers never notice, while discoverd identifies an instance by hostname.
* *Expiry is recorded per node*, keyed by ``(name, version, node id)``, not by a hash of the whole service:
  a re-registration with changed metadata replaces the node's record instead of leaving the old record to
  delete the node later.
* *Clamped expiry*: ``expires`` is honoured as the sender's absolute time, but never more than
  ``max_ttl_ns`` (10 min) after ``now`` — a sender clock far ahead cannot make entries immortal. (A sender
  clock behind by more than its TTL still makes its entries expire at once, as in Go.)
* *Learned entries expire*: nodes learned through :meth:`MicroState.merge_remote_state` (``expires`` 0 in
  go-micro, i.e. immortal there) get ``now + learned_ttl_ns`` (90 s, go-micro v2's RegisterTTL), so they are
  dropped unless re-announced by a broadcast. A learned copy never changes a node we already know (under
  any version): not its content (a push/pull snapshot may be stale), not its expiry (two nodes exchanging
  state periodically would otherwise keep a dead node alive forever). A *learned* create adds unknown nodes
  only, keeping the stored service metadata/endpoints when that version already exists.
* A broadcast create with ``expires`` 0 keeps no expiry (lives until deleted) and clears an older record.
* A record expires at its ``expires`` time inclusive (Go: strictly after), so waking at
  :meth:`MicroState.next_expiry` always makes progress. Versions left without nodes are not stored.
* Re-gossip: :meth:`MicroState.first_seen` lets the async layer re-broadcast only updates it has not seen
  within ``seen_window_ns`` (go-micro never re-broadcasts, so its updates reach only a few peers).
* :meth:`MicroState.merge_remote_state` drops malformed services one by one (Go drops the whole state).

Remote input never raises: unusable updates and services (wrong type or Content-Type, invalid JSON, wrong
JSON types, empty service name, unknown action) are ignored and counted in :attr:`MicroState.rejected`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from discoverd import jsoncodec
from discoverd.core.gossip.micro import (
    ACTION_CREATE,
    ACTION_DELETE,
    CONTENT_TYPE,
    TYPE_SERVICE,
    MicroNode,
    Service,
    Update,
    decode_service,
    service_from_json,
    service_instances,
    service_obj,
)
from discoverd.errors import GossipDecodeError
from discoverd.model import Event, Instance, diff_instances

_SECOND: Final = 1_000_000_000
#: Cap on how far in the future a received ``expires`` may lie.
DEFAULT_MAX_TTL_NS: Final = 600 * _SECOND
#: Lifetime of nodes learned through push/pull state (go-micro v2's RegisterTTL).
DEFAULT_LEARNED_TTL_NS: Final = 90 * _SECOND
#: How long :meth:`MicroState.first_seen` remembers an update.
DEFAULT_SEEN_WINDOW_NS: Final = 120 * _SECOND
#: How many update digests :meth:`MicroState.first_seen` remembers at most (oldest dropped first).
DEFAULT_SEEN_MAX: Final = 10_000

_NodeKey = tuple[str, str, str]


def _add_nodes(old: Sequence[MicroNode], new: Sequence[MicroNode]) -> list[MicroNode]:
    """The new nodes (deduplicated by id, the last wins) then the old ones whose id is not among them."""
    fresh = {n.id: n for n in new}
    return [*fresh.values(), *(n for n in old if n.id not in fresh)]


def merge(old: Sequence[Service], new: Service) -> list[Service]:
    """``old`` with ``new`` merged in: the same version gets ``new``'s metadata/endpoints and the nodes of
    both (new first, new wins on an id clash); every other version is kept; no such version → appended.
    Never mutates its arguments."""
    out: list[Service] = []
    matched = False
    for svc in old:
        if not matched and svc.version == new.version:
            out.append(replace(new, nodes=_add_nodes(svc.nodes, new.nodes)))
            matched = True
        else:
            out.append(svc)
    if not matched:
        out.append(replace(new, nodes=_add_nodes((), new.nodes)))
    return out


def remove(old: Sequence[Service], dele: Service) -> list[Service]:
    """``old`` without the nodes (by id) of ``dele`` in ``dele``'s version; that version is dropped when no
    node is left (others are kept as they are, as in Go). Never mutates its arguments."""
    ids = {n.id for n in dele.nodes}
    out: list[Service] = []
    for svc in old:
        if svc.version != dele.version:
            out.append(svc)
            continue
        nodes = [n for n in svc.nodes if n.id not in ids]
        if nodes:
            out.append(replace(svc, nodes=nodes))
    return out


@dataclass(frozen=True, slots=True)
class _Record:
    expires: int | None  # absolute ns on our clock; None = lives until deleted
    learned: bool  # known only from push/pull state


class MicroState:
    """The services known to one node, their per-node expiry and the recently seen updates."""

    def __init__(
        self,
        *,
        max_ttl_ns: int = DEFAULT_MAX_TTL_NS,
        learned_ttl_ns: int = DEFAULT_LEARNED_TTL_NS,
        seen_window_ns: int = DEFAULT_SEEN_WINDOW_NS,
        seen_max: int = DEFAULT_SEEN_MAX,
    ) -> None:
        if min(max_ttl_ns, learned_ttl_ns, seen_window_ns, seen_max) <= 0:
            raise ValueError("MicroState: ttls, window and seen_max must be positive")
        self._max_ttl = max_ttl_ns
        self._learned_ttl = learned_ttl_ns
        self._seen_window = seen_window_ns
        self._seen_max = seen_max
        self._services: dict[str, list[Service]] = {}
        self._records: dict[_NodeKey, _Record] = {}
        self._seen: dict[bytes, int] = {}
        #: Updates, states and services ignored as unusable (diagnostics).
        self.rejected = 0

    # --- reads ----------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Sorted service names with at least one node."""
        return sorted(self._services)

    def services(self, name: str) -> list[Service]:
        """The stored versions of ``name`` (a fresh list; the Services are frozen and shared)."""
        return list(self._services.get(name, ()))

    def instances(self, name: str) -> list[Instance]:
        """The instances of ``name`` (fresh copies), version by version in node order."""
        return list(self._index(name).values())

    def next_expiry(self) -> int | None:
        """The earliest expiry time (ns) of any node, None if no node expires."""
        return min((r.expires for r in self._records.values() if r.expires is not None), default=None)

    def local_state(self, *, include_learned: bool = True) -> bytes:
        """JSON ``{"<name>": [Service, ...]}`` of everything known (push/pull user state).

        ``include_learned=False`` leaves out nodes known only from push/pull: use it for periodic push/pull
        between discoverd nodes, so second-hand copies are never passed on (no ping-pong of dead nodes)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name in self.names():
            services = self._services[name]
            if not include_learned:
                services = [
                    replace(s, nodes=[n for n in s.nodes if not self._is_learned(name, s.version, n.id)])
                    for s in services
                ]
            kept = [service_obj(s) for s in services if s.nodes]
            if kept:
                out[name] = kept
        return jsoncodec.dumps(out)

    # --- changes --------------------------------------------------------------------------------------------

    def apply(self, update: Update, now_ns: int, *, learned: bool = False) -> list[Event]:
        """Apply a local or received update: create → merge, delete → remove. ``learned`` treats a create as
        learned from push/pull state (module docstring). Never raises on a malformed update (counted)."""
        svc = self._accept(update)
        if svc is None:
            return []
        if update.action == ACTION_CREATE:
            if learned:
                return self._learn(svc, now_ns)
            return self._create(svc, self._deadline(update.expires, now_ns))
        if update.action == ACTION_DELETE:
            return self._delete(svc)
        self.rejected += 1
        return []

    def merge_remote_state(self, buf: bytes, now_ns: int) -> list[Event]:
        """Apply a peer's :meth:`local_state` as learned creates; malformed parts are skipped and counted."""
        if not buf:
            return []
        try:
            obj = jsoncodec.loads(buf)
        except jsoncodec.DecodeError:
            obj = None
        if not isinstance(obj, dict):
            self.rejected += 1
            return []
        events: list[Event] = []
        for entry in obj.values():
            if entry is None:
                continue
            if not isinstance(entry, list):
                self.rejected += 1
                continue
            for raw in entry:
                svc = self._usable(self._decode(raw)) if raw is not None else None
                if svc is not None:
                    events += self._learn(svc, now_ns)
        return events

    def expire(self, now_ns: int) -> list[Event]:
        """Remove the nodes whose record expired at ``now_ns`` (a local delete, not to be broadcast)."""
        due = [k for k, r in self._records.items() if r.expires is not None and r.expires <= now_ns]
        grouped: dict[str, dict[str, list[MicroNode]]] = {}
        for key in due:
            del self._records[key]
            name, version, node_id = key
            grouped.setdefault(name, {}).setdefault(version, []).append(MicroNode(id=node_id))
        events: list[Event] = []
        for name, versions in grouped.items():
            before = self._index(name)
            services = self._services.get(name, [])
            for version, nodes in versions.items():
                services = remove(services, Service(name=name, version=version, nodes=nodes))
            self._store(name, services)
            events += diff_instances(before, self._index(name))
        return events

    def first_seen(self, update_bytes: bytes, now_ns: int) -> bool:
        """True the first time these exact bytes are seen within the window (then re-broadcast them)."""
        digest = hashlib.sha256(update_bytes).digest()
        while self._seen:
            oldest = next(iter(self._seen))
            if self._seen[oldest] > now_ns:
                break
            del self._seen[oldest]
        expires = self._seen.pop(digest, None)
        if expires is not None and expires > now_ns:
            self._seen[digest] = expires
            return False
        self._seen[digest] = now_ns + self._seen_window
        while len(self._seen) > self._seen_max:
            del self._seen[next(iter(self._seen))]
        return True

    # --- internals ------------------------------------------------------------------------------------------

    def _accept(self, update: Update) -> Service | None:
        if update.type != TYPE_SERVICE or update.metadata.get("Content-Type") != CONTENT_TYPE:
            self.rejected += 1
            return None
        try:
            svc = decode_service(update.data)
        except GossipDecodeError:
            self.rejected += 1
            return None
        return self._usable(svc)

    def _decode(self, raw: object) -> Service | None:
        try:
            return service_from_json(raw)
        except GossipDecodeError:
            self.rejected += 1
            return None

    def _usable(self, svc: Service | None) -> Service | None:
        if svc is not None and not svc.name:
            self.rejected += 1
            return None
        return svc

    def _deadline(self, expires: int, now_ns: int) -> int | None:
        return min(expires, now_ns + self._max_ttl) if expires else None

    def _is_learned(self, name: str, version: str, node_id: str) -> bool:
        record = self._records.get((name, version, node_id))
        return record is not None and record.learned

    def _index(self, name: str) -> dict[str, Instance]:
        return {ins.hostname: ins for svc in self._services.get(name, ()) for ins in service_instances(svc)}

    def _store(self, name: str, services: Iterable[Service]) -> None:
        kept = [s for s in services if s.nodes]
        if kept:
            self._services[name] = kept
        else:
            self._services.pop(name, None)

    def _create(self, svc: Service, expires: int | None) -> list[Event]:
        name, before = svc.name, self._index(svc.name)
        stored = self._services.get(name, [])
        ids = {n.id for n in svc.nodes}
        services = list(stored)
        for other in stored:
            moved = [n for n in other.nodes if n.id in ids] if other.version != svc.version else []
            if moved:
                services = remove(services, replace(other, nodes=moved))
                for node in moved:
                    self._records.pop((name, other.version, node.id), None)
        self._store(name, merge(services, svc))
        for node_id in ids:
            self._records[(name, svc.version, node_id)] = _Record(expires, learned=False)
        return diff_instances(before, self._index(name))

    def _learn(self, svc: Service, now_ns: int) -> list[Event]:
        name, before = svc.name, self._index(svc.name)
        fresh = [n for n in svc.nodes if n.id not in before]
        if not fresh:
            return []
        stored = self._services.get(name, [])
        base = next((s for s in stored if s.version == svc.version), svc)
        self._store(name, merge(stored, replace(base, nodes=fresh)))
        record = _Record(now_ns + self._learned_ttl, learned=True)
        for node in fresh:
            self._records[(name, svc.version, node.id)] = record
        return diff_instances(before, self._index(name))

    def _delete(self, svc: Service) -> list[Event]:
        name, before = svc.name, self._index(svc.name)
        stored = self._services.get(name)
        if not stored:
            return []
        for node in svc.nodes:
            self._records.pop((name, svc.version, node.id), None)
        self._store(name, remove(stored, svc))
        return diff_instances(before, self._index(name))
