"""The client's long poll (spec §8.4): one ``polls`` request in flight for every watched app.

:class:`Poller` asks the current node for every app of a
:class:`~discoverd.core.watched_apps.WatchState` with its ``latest_timestamp``; the node holds the request
until one of them changes (``-304`` after ``poll_hold``: poll again at once). Changes are applied to
the state and reported through ``on_change(appid)``; changes of ``infra.discovery`` also refresh
the node list. A failure switches to the next node after a capped exponential backoff with jitter;
the state keeps its last good lists whatever the nodes do. On a node switch every
``latest_timestamp`` goes back to 0 (they are per node).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from discoverd.client.transport import Answer, NodeTransport
from discoverd.core.backoff import Backoff
from discoverd.core.nodes import NodeList
from discoverd.core.watched_apps import WatchState
from discoverd.errors import NOT_MODIFIED, DiscoverdError, error_for_code
from discoverd.model import INFRA_APPID

log = logging.getLogger("discoverd.client")
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Poller:
    """The poll loop of one client. Single-task: :meth:`run` runs once, in the owner's task group.

    ``spawn`` runs each poll as a task of the owner (so :meth:`poke` can cancel just that poll);
    ``on_change`` is called with each watched appid whose list changed.
    """

    def __init__(
        self,
        *,
        env: str,
        hostname: str,
        nodes: NodeList,
        transport: NodeTransport,
        state: WatchState,
        backoff: Backoff,
        poll_hold: float,
        spawn: Spawn,
        on_change: Callable[[str], None],
    ) -> None:
        self._env = env
        self._hostname = hostname
        self._nodes = nodes
        self._transport = transport
        self._state = state
        self._backoff = backoff
        self._hold = poll_hold
        self._spawn = spawn
        self._on_change = on_change
        self._task: asyncio.Task[DiscoverdError | None] | None = None
        self._node = ""
        self._failures = 0
        self._stopped = False
        self.polls_sent = 0
        """How many ``polls`` requests were sent (observability, tests)."""
        self.connected = asyncio.Event()
        """Set while the last poll succeeded; cleared while every node fails."""

    def __repr__(self) -> str:
        return f"<Poller node={self._node or '-'} sent={self.polls_sent} stopped={self._stopped}>"

    def poke(self) -> None:
        """Restart the poll in flight, so that the next one includes newly watched apps."""
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        """Stop polling (the poll in flight is cancelled); :meth:`run` returns. Idempotent."""
        self._stopped = True
        self.poke()

    async def run(self) -> None:
        """Poll until :meth:`stop` (or cancellation). Never raises a poll's failure."""
        while not self._stopped:
            node = self._nodes.current
            if node != self._node:
                self._state.reset_latest()
                self._node = node
            self._task = self._spawn(self._guarded(node))
            await asyncio.wait({self._task})
            task, self._task = self._task, None
            if task.cancelled():
                continue  # a new app joined the watch set, or stop()
            exc = task.result()
            if exc is None:
                self._failures = 0
                self.connected.set()
                continue
            await self._failed(node, exc)

    async def _failed(self, node: str, exc: DiscoverdError) -> None:
        self.connected.clear()
        log.info("poll via %s failed: %s", node, exc)
        if self._nodes.current == node:
            self._nodes.switch()
        await asyncio.sleep(self._backoff.delay(self._failures))
        self._failures += 1

    async def _guarded(self, node: str) -> DiscoverdError | None:
        """One poll; returns its failure instead of raising (it runs in the owner's task group)."""
        try:
            await self._poll_once(node)
        except DiscoverdError as exc:
            return exc
        return None

    async def _poll_once(self, node: str) -> None:
        params: list[tuple[str, str]] = [("env", self._env), ("hostname", self._hostname)]
        for appid, latest in self._state.query():
            params += [("appid", appid), ("latest_timestamp", str(latest))]
        wait = self._hold + 10.0
        self.polls_sent += 1
        answer = await self._transport.call(
            node, "GET", "polls", params, timeout=wait, headers={"x1-bmspy-timeout": str(int(wait * 1000))}
        )
        self.handle(answer)

    def handle(self, answer: Answer) -> list[str]:
        """Apply one ``polls`` answer: update the state, learn the nodes from ``infra.discovery``,
        call ``on_change`` once per watched app whose list changed; returns those appids.

        ``-304`` changes nothing. Raises the answer's error (:class:`DiscoverdError`) for another
        non-zero code or a malformed body; the state is then untouched.
        """
        if answer.code == NOT_MODIFIED:
            return []
        if answer.code != 0:
            raise error_for_code(answer.code, answer.message)
        changed = self._state.apply(answer.data)
        for appid in changed:
            if appid == INFRA_APPID:
                self._nodes.learn(self._state.apps[INFRA_APPID].instances)
            self._on_change(appid)
        return changed
