"""A private event loop in a daemon thread, for the synchronous facades (anyio ``from_thread`` idea).

``Portal.call(coro)`` runs a coroutine on the loop and blocks the calling thread for its result;
background tasks (heartbeats, the poll loop) keep running between calls. ``stop()`` is idempotent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Portal:
    """One loop, one daemon thread. Thread-safe."""

    def __init__(self, name: str = "discoverd-portal") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def __repr__(self) -> str:
        return f"<Portal thread={self._thread.name} alive={self._thread.is_alive()}>"

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the portal's loop; blocks until done (raises what it raises)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Portal.call from the portal's own thread would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("portal call timed out") from None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop the loop and join the thread (call after closing what runs on it)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(5)
