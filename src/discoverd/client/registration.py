"""A registered instance kept alive by heartbeats (spec §8.5).

States (:class:`RegState`)::

    ACTIVE ──close()──▶ CLOSED      (renewing stopped, cancel sent: graceful leave)
       └────orphan()──▶ ORPHANED    (renewing stopped, no cancel: the lease expires on the server)

A closed or orphaned registration cannot be reopened; ``close()`` and ``orphan()`` are idempotent.
The renew loop runs in the owner's task group (:meth:`RegistryLink.spawn`): every
``renew_interval`` it renews; ``-404`` (the server lost the instance: eviction, restart)
re-registers at once; a failed node is switched by the owner and the next tick retries.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from discoverd import jsoncodec
from discoverd.client.transport import Answer, Params
from discoverd.deprecation import Moved, Target
from discoverd.errors import NOT_FOUND, DiscoverdError, ProtocolError, Unavailable, error_for_code
from discoverd.model import Instance

log = logging.getLogger("discoverd.client")


class RegistryLink(Protocol):
    """What a :class:`AsyncRegistration` needs from its owner (:class:`~.async_client.AsyncClient`)."""

    async def call(self, method: str, path: str, params: Params, *, timeout: float | None = None) -> Answer:
        """One request to a registry node; raises :class:`Unavailable` when none answered."""
        ...

    def touched(self, appid: str) -> None:
        """Note that ``appid`` changed on the registry (the owner's next read of it asks a node)."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` until it ends or the owner closes; raises ``DiscoverdError`` once closed."""
        ...


class RegState(enum.Enum):
    """Lifecycle of a :class:`AsyncRegistration`."""

    ACTIVE = "active"
    CLOSED = "closed"
    ORPHANED = "orphaned"


class AsyncRegistration:
    """One instance registered through an :class:`~discoverd.AsyncClient`. Created by ``client.register``.

    ``link`` is the owner's connection to the registry and ``renew_interval`` the heartbeat period
    (seconds). The owner calls :meth:`open` once; users call :meth:`set`, :meth:`close` or
    :meth:`orphan`.
    """

    def __init__(self, link: RegistryLink, instance: Instance, *, renew_interval: float) -> None:
        self._link = link
        self._interval = renew_interval
        self.instance = instance
        self.state = RegState.ACTIVE
        self.renewals = 0
        self.reregistrations = 0
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        i = self.instance
        return f"<AsyncRegistration {i.appid}/{i.hostname} {self.state.value} renewals={self.renewals}>"

    # -- wire -------------------------------------------------------------------------------------

    def _key(self) -> list[tuple[str, str]]:
        i = self.instance
        return [
            ("region", i.region),
            ("zone", i.zone),
            ("env", i.env),
            ("appid", i.appid),
            ("hostname", i.hostname),
        ]

    def _register_params(self) -> list[tuple[str, str]]:
        i = self.instance
        meta = "" if i.metadata is None else jsoncodec.dumps(i.metadata).decode()
        params = [*self._key(), ("status", str(i.status)), ("version", i.version), ("metadata", meta)]
        params += [("addrs", a) for a in i.addrs]
        return params

    async def _send_register(self) -> None:
        answer = await self._link.call("POST", "register", self._register_params())
        if answer.code != 0:
            raise error_for_code(answer.code, answer.message)
        self._link.touched(self.instance.appid)

    async def _renew_once(self) -> None:
        try:
            answer = await self._link.call("POST", "renew", self._key())
        except Unavailable as exc:
            log.warning("renew of %s/%s failed: %s", self.instance.appid, self.instance.hostname, exc)
            return
        if answer.code == NOT_FOUND:
            log.info(
                "%s/%s unknown to the registry: re-registering", self.instance.appid, self.instance.hostname
            )
            self.reregistrations += 1
            try:
                await self._send_register()
            except DiscoverdError as exc:
                log.warning("re-register failed: %s", exc)
        elif answer.code == 0:
            self.renewals += 1

    async def _run(self) -> None:
        while self.state is RegState.ACTIVE:
            await asyncio.sleep(self._interval)
            if self.state is RegState.ACTIVE:
                try:
                    await self._renew_once()
                except DiscoverdError as exc:  # never let one bad answer stop the heartbeat
                    log.warning("renew of %s failed: %s", self.instance.hostname, exc)

    # -- public -----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Register the instance, then renew it every ``renew_interval`` until closed or orphaned.

        Called once, by the owner. Raises the registry's refusal
        (:class:`~discoverd.errors.ProtocolError`) or :class:`Unavailable`; nothing is renewed then.
        """
        if self._task is not None:
            raise DiscoverdError("a registration is opened once")
        await self._send_register()
        self._task = self._link.spawn(self._run())

    def orphan(self) -> None:
        """Stop renewing without cancelling: the server evicts the instance after its threshold."""
        if self.state is RegState.ACTIVE:
            self.state = RegState.ORPHANED
            self._stop_task()

    async def close(self) -> None:
        """Stop renewing and cancel the instance on the registry (errors are logged). Idempotent."""
        if self.state is not RegState.ACTIVE:
            return
        self.state = RegState.CLOSED
        self._stop_task()
        try:
            answer = await self._link.call("POST", "cancel", self._key())
            self._link.touched(self.instance.appid)
            if answer.code not in (0, NOT_FOUND):
                log.warning("cancel of %s answered %s", self.instance.hostname, answer.code)
        except Unavailable as exc:
            log.warning("cancel of %s failed: %s", self.instance.hostname, exc)

    async def set(self, *, status: int | None = None, metadata: dict[str, str] | None = None) -> None:
        """Change the status (1 UP, 2 WAITING) and/or merge metadata on the registry.

        Raises :class:`~discoverd.errors.ProtocolError` when the registry refuses the change.
        """
        if self.state is not RegState.ACTIVE:
            raise ProtocolError("registration is not active", code=-400)
        params: list[tuple[str, Any]] = [*self._key(), ("version", self.instance.version)]
        if status is not None:
            params.append(("status", str(status)))
        if metadata is not None:
            params.append(("metadata", jsoncodec.dumps(metadata).decode()))
        answer = await self._link.call("POST", "set", params)
        if answer.code != 0:
            raise error_for_code(answer.code, answer.message)
        self._link.touched(self.instance.appid)
        if status is not None:
            self.instance.status = status
        if metadata is not None:
            self.instance.metadata = {**(self.instance.metadata or {}), **metadata}

    def _stop_task(self) -> None:
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()


_MOVED = Moved(
    __name__, {"Registration": Target(__name__, "AsyncRegistration", "discoverd.AsyncRegistration")}
)


def __getattr__(name: str) -> object:
    """``Registration`` is the former name of :class:`AsyncRegistration` (deprecated)."""
    return _MOVED.resolve(name)
