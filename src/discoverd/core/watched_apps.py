"""The client's view of the apps it watches, fed by ``polls`` answers (spec §4, §8.4).

Per app: the last ``latest_timestamp`` from the node in use and the last good instance list.
Rules (fixing the Go client's pitfalls, spec §11.17):

* ``latest_timestamp`` advances on every answer that contains the app, even when it has no UP
  instance (kratos #494 busy loop), and the empty list replaces the cached one (the server says
  there is nothing to send traffic to);
* an app reported missing (``error.-404``), an error, or a node outage never touches the cache;
* on a node switch every ``latest_timestamp`` goes back to 0 (they are per node);
* an answer with ``latest_timestamp`` 0 or a malformed body is an error (the caller switches node).

Decoding is incremental (the SDK's CPU per poll answer bounds the clients' fan-out): an app whose
``latest_timestamp`` equals the one its cached list came from, on the same node, keeps its list
without decoding it; an instance whose JSON object equals the one it was built from last time is
the same :class:`Instance` object. The lists are equal to a full decode either way; the body of a
skipped app is not checked again (it is the one checked before), and an object equal to a checked
one (Python's ``==``: ``1 == 1.0 == True``) counts as checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from discoverd.errors import BadRequest
from discoverd.model import Instance

Built = dict[tuple[str, str], tuple[Any, Instance]]
"""(zone, hostname) → (the JSON object, the instance decoded from it)."""


@dataclass(slots=True)
class AppView:
    """One watched app: ``instances`` (UP ones, all zones), ``version`` bumped on each update."""

    appid: str
    latest: int = 0
    instances: list[Instance] = field(default_factory=list)
    version: int = 0
    known: bool = False
    """True once an answer for the app arrived (an empty list is then a real answer)."""
    scheduler: dict[str, dict[str, int]] | None = None
    """The app's multi-zone scheduler (consumer zone → provider zone → weight), when the server sends one."""
    dirty: bool = False
    """Set when this client wrote to the app: reads should ask a node until the next answer."""
    fresh: int = 0
    """The ``latest_timestamp`` of the poll answer ``instances`` came from (0: unknown, e.g. after
    a node switch or a fetch): an answer with the same one, from the same node, holds the same list."""
    built: Built = field(default_factory=dict)
    """The (zone, hostname) → (JSON object, instance) map of the last decode, for reuse."""


class WatchState:
    """The watched apps of one client. Pure bookkeeping; not thread-safe."""

    def __init__(self) -> None:
        self.apps: dict[str, AppView] = {}

    def __repr__(self) -> str:
        return f"WatchState({sorted(self.apps)})"

    def add(self, appid: str) -> bool:
        """Watch ``appid``; returns True if it is new."""
        if appid in self.apps:
            return False
        self.apps[appid] = AppView(appid)
        return True

    def query(self) -> list[tuple[str, int]]:
        """``(appid, latest_timestamp)`` pairs for the next ``polls``."""
        return [(a.appid, a.latest) for a in self.apps.values()]

    def reset_latest(self) -> None:
        """Forget every ``latest_timestamp`` (the node changed; the cache stays)."""
        for view in self.apps.values():
            view.latest = view.fresh = 0

    def store(self, appid: str, instances: list[Instance], latest: int) -> bool:
        """Record a fetched list (outside the poll loop); True if it changed the view."""
        view = self.apps.get(appid)
        if view is None:
            return False
        view.latest = max(view.latest, latest)
        view.dirty = False
        if view.known and view.instances == instances:
            return False
        view.instances, view.known, view.fresh = instances, True, 0
        view.version += 1
        return True

    def apply(self, data: Any) -> list[str]:
        """Apply the ``data`` of a ``polls`` answer; returns the watched appids that changed.

        Raises :class:`BadRequest` on a malformed answer (the caller treats it as a node error);
        the state is then untouched. Unchanged apps and instances are not rebuilt (module doc).
        """
        if not isinstance(data, dict):
            raise BadRequest("polls answer: data is not an object")
        decoded = [
            (self.apps[a], info, _decode_view(self.apps[a], info))
            for a, info in data.items()
            if a in self.apps
        ]
        changed = []
        for view, info, (instances, latest, built) in decoded:
            view.latest = latest
            view.scheduler = decode_scheduler(info)
            view.dirty = False
            if built is None:
                continue  # same latest_timestamp from the same node: the same list
            view.built, view.fresh = built, latest
            if view.known and view.instances == instances:
                continue
            view.instances, view.known = instances, True
            view.version += 1
            changed.append(view.appid)
        return changed


def _decode_view(view: AppView, info: Any) -> tuple[list[Instance], int, Built | None]:
    """``info`` decoded for ``view``: (instances, latest, built); ``built`` is ``None`` (and the
    list empty) when the view's list is known to be current, see :attr:`AppView.fresh`."""
    zones, latest = _info_parts(info)
    if view.known and view.fresh == latest:
        return [], latest, None
    instances, built = decode_reusing(zones, view.built)
    return instances, latest, built


def decode_reusing(
    zones: dict[str, Any], previous: Mapping[tuple[str, str], tuple[Any, Instance]]
) -> tuple[list[Instance], Built]:
    """The instances of ``zones`` (InstanceInfo's ``instances``) in order, and their (zone, hostname)
    → (object, instance) map. An object equal to the one ``previous`` holds for its key gives that
    same instance; any other is decoded (:meth:`Instance.from_wire`, which raises :class:`BadRequest`)."""
    out: list[Instance] = []
    built: Built = {}
    for zone, zone_list in zones.items():
        if not isinstance(zone_list, list):
            raise BadRequest("InstanceInfo: a zone must hold an array")
        for obj in zone_list:
            host = obj.get("hostname") if type(obj) is dict else None
            if type(host) is not str:
                out.append(Instance.from_wire(obj))
                continue
            key = (zone, host)
            old = previous.get(key)
            ins = old[1] if old is not None and old[0] == obj else Instance.from_wire(obj)
            built[key] = (obj, ins)
            out.append(ins)
    return out, built


def _info_parts(info: Any) -> tuple[dict[str, Any], int]:
    """An InstanceInfo's zones object and ``latest_timestamp``, checked; raises :class:`BadRequest`."""
    if not isinstance(info, dict):
        raise BadRequest("InstanceInfo: not an object")
    latest = info.get("latest_timestamp")
    if isinstance(latest, bool) or not isinstance(latest, int) or latest <= 0:
        raise BadRequest("InstanceInfo: latest_timestamp must be a positive integer")
    zones = info.get("instances")
    if zones is None:
        zones = {}
    if not isinstance(zones, dict):
        raise BadRequest("InstanceInfo: instances must be an object of zones")
    return zones, latest


def decode_info(info: Any) -> tuple[list[Instance], int]:
    """An InstanceInfo (``{"instances": {zone: [...]}, "latest_timestamp": N}``) → (instances, latest)."""
    zones, latest = _info_parts(info)
    out: list[Instance] = []
    for zone_list in zones.values():
        if not isinstance(zone_list, list):
            raise BadRequest("InstanceInfo: a zone must hold an array")
        out.extend(Instance.from_wire(obj) for obj in zone_list)
    return out, latest


def decode_scheduler(info: Any) -> dict[str, dict[str, int]] | None:
    """The ``scheduler`` of an InstanceInfo (spec §7): consumer zone → provider zone → weight.

    Lenient: a missing or malformed scheduler (or the older array shape) is ``None``, never an error.
    """
    sched = info.get("scheduler") if isinstance(info, dict) else None
    clients = sched.get("clients") if isinstance(sched, dict) else None
    if not isinstance(clients, dict):
        return None
    out: dict[str, dict[str, int]] = {}
    for consumer, spec in clients.items():
        zones = spec.get("zones") if isinstance(spec, dict) else None
        if not isinstance(zones, dict):
            continue
        weights = {
            str(z): w["weight"]
            for z, w in zones.items()
            if isinstance(w, dict) and isinstance(w.get("weight"), int) and not isinstance(w["weight"], bool)
        }
        if weights:
            out[str(consumer)] = weights
    return out or None
