"""The node's own life in its registry: self-registration, eviction passes, protect windows.

* **Self-registration** (spec §6.2, §12.12): the node registers itself as ``infra.discovery`` with
  its advertised ``http://`` address, renews that every ``self_renew_interval`` (re-registering if it
  was evicted or cancelled) and cancels it on a graceful stop.
* **Eviction** (spec §5.2): each pass closes the guard's window (self-preservation may switch) and
  removes the instances silent for longer than ``evict_after`` (``evict_ceiling`` while the guard
  protects), at most the share the threshold allows. After a snapshot restore nothing is evicted
  for one ``evict_after`` (:meth:`Lifecycle.hold_eviction`), so restored instances get a chance to renew.
* **Start-up protect** (``enable_protect``): reads answer -500 until a peer sync succeeds or
  ``protect_duration`` passes (:meth:`Lifecycle.end_protect`).

Every change is published as an event. The node's task group calls these methods on its timers;
they never block. One loop; not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable

from discoverd.config import ServerConfig
from discoverd.core.events import Event, Evicted, ProtectChanged, Source
from discoverd.core.registry_state import RegistryState
from discoverd.model import INFRA_APPID, UP, Instance


class Lifecycle:
    """Self-registration, eviction and the protect windows of one node."""

    def __init__(
        self,
        config: ServerConfig,
        registry: RegistryState,
        *,
        clock: Callable[[], int],
        publish: Callable[[Event | None], None],
    ) -> None:
        self.config = config
        self.registry = registry
        self.clock = clock
        self.publish = publish
        self.protected = config.enable_protect
        """Start-up protect: protocol reads answer -500 while True."""
        self.no_evict_until = 0
        """Clock value (ns) before which :meth:`evict` removes nothing."""

    def __repr__(self) -> str:
        return f"<Lifecycle protected={self.protected} no_evict_until={self.no_evict_until}>"

    # -- self-registration -------------------------------------------------------------------------

    def self_instance(self) -> Instance:
        """This node's ``infra.discovery`` registration."""
        c = self.config
        return Instance(
            region=c.region,
            zone=c.zone,
            env=c.env,
            appid=INFRA_APPID,
            hostname=c.hostname,
            addrs=[f"http://{c.advertise}"],
            status=UP,
        )

    def register_self(self) -> None:
        self.publish(self.registry.register(self.self_instance(), self.clock(), source=Source.NODE))

    def renew_self(self) -> None:
        """Renew the own registration, re-registering it if it was evicted or cancelled."""
        c = self.config
        renewed = self.registry.renew(
            INFRA_APPID, c.env, c.zone, c.hostname, self.clock(), source=Source.NODE
        )
        if renewed is None:
            self.register_self()
        else:
            self.publish(renewed)

    def cancel_self(self) -> None:
        c = self.config
        self.publish(
            self.registry.cancel(INFRA_APPID, c.env, c.zone, c.hostname, self.clock(), source=Source.NODE)
        )

    def adopt(self, theirs: Instance) -> None:
        """Store a peer's newer copy (it answered a replicated renew -409), as a register does."""
        self.publish(self.registry.register(theirs, self.clock(), source=Source.REPAIR))

    def local_copy(self, key: tuple[str, str, str, str]) -> Instance | None:
        """A copy of the stored instance ``(appid, env, zone, hostname)``, or ``None``."""
        ins = self.registry.get(*key)
        return None if ins is None else ins.copy()

    # -- eviction ----------------------------------------------------------------------------------

    def evict(self) -> Evicted | None:
        """Close the guard window and run one eviction pass (nothing before ``no_evict_until``)."""
        c = self.config
        self.publish(self.registry.guard.end_window())
        now = self.clock()
        if now < self.no_evict_until:
            return None
        evicted = self.registry.evict(
            now, int(c.evict_after * 1e9), int(c.evict_ceiling * 1e9), c.protect_threshold
        )
        self.publish(evicted)
        return evicted

    def recount(self) -> None:
        """The guard's periodic recount of expected renews."""
        self.registry.guard.recount(self.registry.size)

    def hold_eviction(self) -> None:
        """Evict nothing for one ``evict_after`` from now (after a snapshot restore)."""
        self.no_evict_until = self.clock() + int(self.config.evict_after * 1e9)

    # -- start-up protect --------------------------------------------------------------------------

    def end_protect(self, reason: str) -> None:
        """Leave start-up protect (reads are served again); nothing when not protected."""
        if self.protected:
            self.protected = False
            self.publish(ProtectChanged(False, reason))
