"""A real headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright, and a node to show.

Playwright never downloads a browser here: it launches ``CHROMIUM`` through ``executable_path``. Without
Chromium or Playwright the tests skip, except in CI (env ``CI`` set), where they fail.
Screenshots go to ``build/test-artifacts/dashboard/`` under the repository (``build/`` is gitignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node
from tests.helpers import Wire

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Error, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "dashboard"


def _missing() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (`make test` installs it: scripts/sysdeps.sh test)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return ""


@pytest.fixture(scope="session", autouse=True)
def _chromium_present() -> None:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(f"browser tests skipped: {missing}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # executable_path: Debian's Chromium; Playwright's own browser builds are never used or fetched
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Console:
    """What the page reported: console messages of type error, uncaught page errors."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text} ({msg.location})")

    def on_page_error(self, err: Error) -> None:
        self.errors.append(f"page error: {err}")


@dataclass
class Screens:
    """Saves screenshots of one test as ``<test>-<n>-<what>.png`` in :data:`ARTIFACTS`."""

    page: Page
    test: str
    taken: list[Path] = field(default_factory=list)

    async def shot(self, what: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.test}-{len(self.taken) + 1:02d}-{what}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@dataclass
class Session:
    page: Page
    console: Console
    screens: Screens


@pytest.fixture
async def session(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Session]:
    """A fresh browser context and page; console errors collected; a last screenshot at the end."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    console = Console()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    for old in ARTIFACTS.glob(f"{test}-*.png") if ARTIFACTS.is_dir() else ():
        old.unlink()
    screens = Screens(page, test)
    try:
        yield Session(page, console, screens)
    finally:
        if not page.is_closed() and page.url.startswith("http"):
            await screens.shot("final")
        await context.close()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running_node(fast_config()) as n:
        yield n


@pytest.fixture
async def wire(node: Node) -> AsyncIterator[Wire]:
    async with aiohttp.ClientSession() as s:
        yield Wire(s, node.address)
