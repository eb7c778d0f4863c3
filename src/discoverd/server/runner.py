"""Running a node: inside the current loop (:func:`running_node`) or as the process (:func:`serve_forever`).

The node itself, and the order it starts and stops in, is ``server/node.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from discoverd.config import ServerConfig
from discoverd.core.registry_state import RegistryState
from discoverd.server.node import Node

__all__ = ["Node", "running_node", "serve_forever"]


@contextlib.asynccontextmanager
async def running_node(config: ServerConfig, registry: RegistryState | None = None) -> AsyncIterator[Node]:
    """Run a node in the current loop for the duration of the block (tests, embedding)."""
    node = Node(config, registry)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(node.run())
        ready = tg.create_task(node.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task  # re-raises the start-up failure
        try:
            yield node
        finally:
            node.stop()


def serve_forever(config: ServerConfig, *, on_ready: Callable[[Node], None] | None = None) -> None:
    """Run a node until SIGINT/SIGTERM, on uvloop where available. Blocks.

    A signal stops the node gracefully at any point of its start-up or run (a node stopped before it
    is ready returns without calling ``on_ready``). A start-up failure is raised as itself (for
    example :class:`~discoverd.server.http_listen.ListenError`), not wrapped in an exception group.
    Outside the event loop (before it runs, after it ends) SIGTERM raises ``KeyboardInterrupt``
    like SIGINT, for the caller to end quietly.
    """

    async def main() -> None:
        node = Node(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, node.stop)
        run = asyncio.ensure_future(node.run())
        ready = asyncio.ensure_future(node.ready.wait())
        try:
            await asyncio.wait((run, ready), return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and on_ready is not None:
                on_ready(node)
            await run
        finally:
            ready.cancel()
            run.cancel()

    _terminate_as_interrupt()
    try:
        _run(main())
    except BaseExceptionGroup as group:
        only = _single(group)
        if only is None:
            raise
        raise only from None
    finally:
        _terminate_as_interrupt()


def _terminate_as_interrupt() -> None:
    """Make SIGTERM raise ``KeyboardInterrupt`` as SIGINT does (from the main thread only)."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (nested groups included), or ``None`` when there are more."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(coro)
    else:
        uvloop.run(coro)
