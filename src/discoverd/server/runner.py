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
from discoverd.core.registry import Registry
from discoverd.server.node import Node

__all__ = ["Node", "running_node", "serve_forever"]


@contextlib.asynccontextmanager
async def running_node(config: ServerConfig, registry: Registry | None = None) -> AsyncIterator[Node]:
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
    """Run a node until SIGINT/SIGTERM, on uvloop where available. Blocks."""

    async def main() -> None:
        node = Node(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, node.stop)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(node.run())
            await node.ready.wait()
            if on_ready is not None:
                on_ready(node)

    _run(main())


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(coro)
    else:
        uvloop.run(coro)
