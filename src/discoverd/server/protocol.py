"""The bilibili/discovery endpoints of a node (spec §3), one method each.

Every handler takes the request and its parsed :class:`~discoverd.core.params.Form`, binds the
parameters to the endpoint's dataclass (:mod:`discoverd.core.args`), applies the operation to the
:class:`~discoverd.core.registry_state.RegistryState`,
publishes the event it returned, and returns the encoded
answer. What follows from the event (waking polls, replicating, logging, counting) is done by the
subscribers (``server/events.py``), not here. A binding failure raises
:class:`~discoverd.core.params.BindError` and a refused request :class:`~discoverd.errors.BadRequest`:
the pipeline turns both into ``-400`` answers. Handlers never block; ``poll``/``polls`` may return
``None`` (held: answered later).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from discoverd.core import args as specs
from discoverd.core import wire
from discoverd.core.events import Event, SetChange
from discoverd.core.params import Form, bind, register_metadata, set_metadata
from discoverd.core.registry_state import RegistryState
from discoverd.errors import BadRequest
from discoverd.model import UP, WAITING, Instance
from discoverd.server import answers
from discoverd.server.http import HttpRequest
from discoverd.server.polls import LongPolls
from discoverd.server.replication import NodeStatus
from discoverd.server.stats import Counters

#: What the Go server answers for a renew of an unknown hostname in a known zone: a zero Instance.
_ZERO_INSTANCE: Final = (
    b'{"region":"","zone":"","env":"","appid":"","hostname":"","addrs":null,"version":"",'
    b'"metadata":null,"status":0,"reg_timestamp":0,"up_timestamp":0,"renew_timestamp":0,'
    b'"dirty_timestamp":0,"latest_timestamp":0}'
)


class Endpoints:
    """The protocol handlers of one node. One loop; not thread-safe."""

    def __init__(
        self,
        registry: RegistryState,
        *,
        clock: Callable[[], int],
        publish: Callable[[Event | None], None],
        polls: LongPolls,
        counters: Counters,
        nodes: Callable[[], Sequence[NodeStatus]],
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.publish = publish
        self.polls = polls
        self.counters = counters
        self._nodes = nodes

    def __repr__(self) -> str:
        return f"<Endpoints {self.registry!r}>"

    # -- writes --------------------------------------------------------------------------------

    def register(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.REGISTER)
        if a.status > WAITING:
            raise BadRequest(f"status {a.status}: must be 1 (UP) or 2 (WAITING)")
        ins = Instance(
            region=a.region,
            zone=a.zone,
            env=a.env,
            appid=a.appid,
            hostname=a.hostname,
            addrs=list(a.addrs),
            version=a.version,
            metadata=register_metadata(a.metadata),
            status=a.status,
            dirty_timestamp=max(a.dirty_timestamp, 0),
        )
        self.publish(self.registry.register(ins, self.clock(), source=a.source))
        return answers.ok()

    def renew(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.RENEW)
        self.counters.renews += 1
        peer_dirty = a.dirty_timestamp if a.replication else None
        renewed = self.registry.renew(
            a.appid, a.env, a.zone, a.hostname, self.clock(), peer_dirty=peer_dirty, source=a.source
        )
        if renewed is None:
            app = self.registry.app(a.appid, a.env)
            known_zone = app is not None and a.zone in app.zones
            return answers.json_answer(-404, wire.envelope(-404, _ZERO_INSTANCE if known_zone else b"null"))
        app = self.registry.apps[(a.appid, a.env)]
        code = renewed.code
        answer = answers.json_answer(code, wire.envelope(code, wire.renewed(app, renewed.instance)))
        self.publish(renewed)
        return answer

    def cancel(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.CANCEL)
        now = self.clock()
        cancelled = self.registry.cancel(
            a.appid, a.env, a.zone, a.hostname, now, latest=a.latest_timestamp, source=a.source
        )
        if cancelled is None:
            return answers.error(-404)
        self.publish(cancelled)
        return answers.ok()

    def set(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.SET)
        changes = _set_changes(a.hostname, a.status, a.metadata)
        ts = a.set_timestamp if a.set_timestamp > 0 else self.clock()
        event = self.registry.apply_set(a.appid, a.env, a.zone, changes, ts, region=a.region, source=a.source)
        self.publish(event)  # a refused set is replicated too, as the Go server does
        if event.refused:
            raise BadRequest(event.refused)
        return answers.ok()

    # -- reads ---------------------------------------------------------------------------------

    def fetch(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.FETCH)
        app = self.registry.app(a.appid, a.env)
        if app is None:
            return answers.json_answer(-404, wire.envelope(-404, b"null"))
        if a.zone and a.zone not in app.zones:
            return answers.json_answer(-404, wire.envelope(-404, wire.empty_info(app.latest)))
        return answers.json_answer(0, wire.fetch_body(app, a.zone, a.status))

    def fetchs(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.FETCHS)
        found = {}
        for appid in a.appid:
            app = self.registry.app(appid, a.env)
            if app is not None and (not a.zone or a.zone in app.zones):
                found[appid] = wire.instance_info(app, a.zone, a.status)
        return answers.json_answer(0, wire.envelope(0, wire.app_map(found.items())))

    def fetch_all(self, req: HttpRequest, form: Form) -> bytes:
        return answers.json_answer(0, wire.envelope(0, wire.fetch_all(self.registry.apps.values())))

    def nodes(self, req: HttpRequest, form: Form) -> bytes:
        rows = [{"addr": n.addr, "status": n.status, "zone": n.zone} for n in self._nodes()]
        return answers.json_answer(0, wire.envelope(0, wire.dumps(rows)))

    def poll(self, req: HttpRequest, form: Form) -> bytes | None:
        return self.polls.poll(req, bind(form, specs.POLLS), single=True)

    def polls_(self, req: HttpRequest, form: Form) -> bytes | None:
        return self.polls.poll(req, bind(form, specs.POLLS), single=False)


def _set_changes(
    hosts: Sequence[str], statuses: Sequence[int], metas: Sequence[str]
) -> tuple[SetChange, ...]:
    """The changes of a ``set``, validated: one status and one metadata per host when any is given."""
    if not hosts:
        raise BadRequest("set: at least one hostname is required")
    if statuses and len(statuses) != len(hosts):
        raise BadRequest("set: one status per hostname is required")
    if metas and len(metas) != len(hosts):
        raise BadRequest("set: one metadata per hostname is required")
    for s in statuses:
        if s not in (UP, WAITING):
            raise BadRequest(f"set: status {s}: must be 1 (UP) or 2 (WAITING)")
    parsed = [set_metadata(m) for m in metas]
    return tuple(
        SetChange(h, statuses[i] if statuses else None, parsed[i] if parsed else None)
        for i, h in enumerate(hosts)
    )
