"""The dashboard in a real headless Chromium: loads clean, shows the registry live, acts on it.

Every test fails on any console error or uncaught page error, and saves screenshots (see conftest).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from playwright.async_api import Locator, Page, expect

from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node
from tests.browser.conftest import Session
from tests.helpers import Wire, eventually

LIVE = 5_000  # ms: Playwright's deadline for what the page shows


async def instances(wire: Wire, appid: str = "demo.svc") -> dict[str, Any]:
    """The registry's view through the protocol: hostname → instance (UP and WAITING)."""
    body, _ = await wire.get("fetch", {"env": "dev", "appid": appid, "status": "3"})
    if body["code"] != 0:
        return {}
    return {i["hostname"]: i for zone in body["data"]["instances"].values() for i in zone}


async def open_app(page: Page, node: Node, appid: str = "demo.svc") -> None:
    await page.goto(f"http://{node.address}/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    await page.locator(f'#apps tr[data-app="{appid}"] button').click()
    await expect(page.locator("#instances-panel")).to_be_visible()


def row(page: Page, hostname: str) -> Locator:
    return page.locator(f'#instances tr[data-hostname="{hostname}"]')


async def test_page_loads_clean_and_shows_a_registered_instance(
    session: Session, node: Node, wire: Wire
) -> None:
    page = session.page
    await wire.register("demo.svc", "h1", metadata='{"color":"red"}', version="v1.2")
    await page.goto(f"http://{node.address}/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    app_row = page.locator('#apps tr[data-app="demo.svc"]')
    await expect(app_row).to_contain_text("sh001: 1 UP")
    await expect(page.locator(f'#nodes tr[data-addr="{node.address}"]')).to_contain_text("UP")
    await expect(page.locator("#guard-status")).to_have_text("Eviction running normally")
    await expect(page.locator("#node-summary")).to_contain_text("zone sh001")
    await session.screens.shot("apps")
    await app_row.locator("button").click()
    h1 = row(page, "h1")
    await expect(h1).to_contain_text("http://10.0.0.1:8002")
    await expect(h1).to_contain_text("color=red")
    await expect(h1).to_contain_text("v1.2")
    await expect(h1.locator(".badge")).to_have_text("UP")
    await expect(page).to_have_url(f"http://{node.address}/#app=demo.svc&env=dev")
    await session.screens.shot("instances")
    assert session.console.errors == []


async def test_page_updates_without_reload_when_the_registry_changes(
    session: Session, node: Node, wire: Wire
) -> None:
    page = session.page
    await wire.register("demo.svc", "h1")
    await open_app(page, node)
    await expect(row(page, "h1")).to_be_visible()
    await page.evaluate("window.__sameDocument = 42")
    started = time.monotonic()
    await wire.register("demo.svc", "h2", zone="sh002")
    await expect(row(page, "h2")).to_be_visible(timeout=LIVE)
    elapsed = time.monotonic() - started
    await expect(page.locator('#apps tr[data-app="demo.svc"]')).to_contain_text("sh002: 1 UP")
    await wire.register("other.svc", "h3")
    await expect(page.locator('#apps tr[data-app="other.svc"]')).to_be_visible(timeout=LIVE)
    await session.screens.shot("after-registers")
    await wire.post("cancel", {"zone": "sh001", "env": "dev", "appid": "demo.svc", "hostname": "h1"})
    await expect(row(page, "h1")).to_have_count(0, timeout=LIVE)
    assert await page.evaluate("window.__sameDocument") == 42, "the page was reloaded"
    assert elapsed < 1.0, f"the new instance took {elapsed:.2f} s to show"
    assert session.console.errors == []


async def test_guard_panel_shows_self_preservation(session: Session, node: Node, wire: Wire) -> None:
    page = session.page
    await wire.register("demo.svc", "h1")
    await page.goto(f"http://{node.address}/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE)
    node.lifecycle.evict()  # a window closes without renews: eviction is suspended
    await expect(page.locator("#guard-status")).to_have_text("Eviction suspended", timeout=LIVE)
    reason = page.locator('#guard-reasons li[data-kind="self-preservation"]')
    await expect(reason).to_contain_text("0 renews in the last 60 s window")
    await session.screens.shot("guard")
    assert session.console.errors == []


async def test_operator_actions_change_the_registry(session: Session, node: Node, wire: Wire) -> None:
    page = session.page
    await wire.register("demo.svc", "h1", metadata='{"color":"red"}')
    await open_app(page, node)
    h1 = row(page, "h1")
    message = page.locator("#message")

    await h1.locator('button[data-action="Set WAITING"]').click()
    await expect(message).to_have_text("set h1 WAITING: done")
    await eventually_async(lambda: status_of(wire, "h1"), 2, "h1 WAITING in the registry")
    await expect(h1.locator(".badge")).to_have_text("WAITING", timeout=LIVE)
    await session.screens.shot("waiting")

    await h1.locator('button[data-action="Set UP"]').click()
    await eventually_async(lambda: status_of(wire, "h1"), 1, "h1 UP in the registry")
    await expect(h1.locator(".badge")).to_have_text("UP", timeout=LIVE)

    await h1.locator('button[data-action="Edit metadata"]').click()
    await expect(page.locator("#meta-dialog")).to_be_visible()
    await page.locator("#meta-text").fill('{"color": 7}')
    await page.locator("#meta-save").click()
    await expect(page.locator("#meta-error")).to_contain_text('the value of "color" must be a string')
    await page.locator("#meta-text").fill('{"color": "blue", "owner": "ops"}')
    await session.screens.shot("metadata-dialog")
    await page.locator("#meta-save").click()
    await expect(message).to_have_text("metadata of h1: done")
    meta = (await instances(wire))["h1"]["metadata"]
    assert meta == {"color": "blue", "owner": "ops"}
    await expect(h1).to_contain_text("owner=ops", timeout=LIVE)

    await h1.locator('button[data-action="Cancel"]').click()
    await expect(page.locator("#confirm-dialog")).to_be_visible()
    await expect(page.locator("#confirm-text")).to_contain_text("Cancel h1 of demo.svc")
    await session.screens.shot("confirm-cancel")
    await page.locator("#confirm-no").click()
    assert "h1" in await instances(wire)
    await h1.locator('button[data-action="Cancel"]').click()
    await page.locator("#confirm-ok").click()
    await expect(message).to_have_text("cancel h1: done")
    assert await instances(wire) == {}
    await expect(page.locator("#instances-gone")).to_be_visible(timeout=LIVE)
    await expect(page.locator('#apps tr[data-app="demo.svc"]')).to_have_count(0)
    assert session.console.errors == []


async def test_actions_need_a_token_when_tokens_are_configured(session: Session) -> None:
    page = session.page
    config = fast_config(tokens=("s3cret:admin", "viewer:read"))
    async with running_node(config) as node, aiohttp.ClientSession() as http:
        wire = Wire(http, node.address)
        headers = {"Authorization": "Bearer s3cret"}
        async with http.post(
            f"http://{node.address}/discovery/register",
            data={
                "zone": "sh001",
                "env": "dev",
                "appid": "demo.svc",
                "hostname": "h1",
                "addrs": "http://a:1",
                "status": "1",
            },
            headers=headers,
        ) as r:
            assert (await r.json())["code"] == 0
        await open_app(page, node)
        h1 = row(page, "h1")
        message = page.locator("#message")
        await h1.locator('button[data-action="Set WAITING"]').click()
        await expect(message).to_contain_text("error -401")
        await session.screens.shot("refused-401")
        await page.locator("#token").fill("viewer")
        await page.locator("#token-save").click()
        await h1.locator('button[data-action="Set WAITING"]').click()
        await expect(message).to_contain_text("error -403")
        assert (await instances(wire))["h1"]["status"] == 1
        await page.locator("#token").fill("s3cret")
        await page.locator("#token-save").click()
        await h1.locator('button[data-action="Set WAITING"]').click()
        await expect(message).to_have_text("set h1 WAITING: done")
        assert (await instances(wire))["h1"]["status"] == 2
        await expect(h1.locator(".badge")).to_have_text("WAITING", timeout=LIVE)
        stored = await page.evaluate("sessionStorage.getItem('discoverd.token')")
        assert stored == "s3cret"
        await session.screens.shot("allowed")
        assert session.console.errors == []


async def test_protected_reads_ask_for_a_token(session: Session) -> None:
    page = session.page
    async with running_node(fast_config(tokens=("s3cret:admin",), protect_reads=True)) as node:
        await page.goto(f"http://{node.address}/")
        conn = page.locator("#conn")
        await expect(conn).to_have_attribute("data-state", "error", timeout=LIVE)
        await expect(conn).to_contain_text("-401")
        await session.screens.shot("needs-token")
        await page.locator("#token").fill("s3cret")
        await page.locator("#token-save").click()
        await expect(conn).to_have_attribute("data-state", "live", timeout=LIVE)
        await expect(page.locator('#apps tr[data-app="infra.discovery"]')).to_be_visible()
        assert session.console.errors == []


async def test_registry_text_is_shown_as_text(session: Session, node: Node, wire: Wire) -> None:
    page = session.page
    evil = "<img src=x onerror=window.__pwned=1>"
    await wire.register(
        "demo.svc",
        "<b>bold</b>",
        metadata='{"note":"<script>window.__pwned=1</script>","<i>k</i>":"v"}',
        version=evil,
    )
    await open_app(page, node)
    cell = row(page, "<b>bold</b>")
    await expect(cell).to_contain_text("<b>bold</b>")
    await expect(cell).to_contain_text(evil)
    await expect(cell).to_contain_text("note=<script>window.__pwned=1</script>")
    await expect(cell).to_contain_text("<i>k</i>=v")
    injected = page.locator("#instances b, #instances i, #instances img, #instances script")
    assert await injected.count() == 0
    assert await page.evaluate("window.__pwned") is None
    assert session.console.errors == []


async def test_leaving_the_page_forgets_its_held_poll(session: Session, node: Node) -> None:
    """Held state polls are forgotten when the browser leaves (the abort hook)."""
    page = session.page
    dash = node.dashboard
    assert dash is not None
    await page.goto(f"http://{node.address}/")
    await eventually(lambda: len(dash.held) == 1, what="the page's poll to be held")
    await page.goto("about:blank")
    await eventually(lambda: not dash.held, what="the poll to be forgotten")
    assert session.console.errors == []


async def status_of(wire: Wire, hostname: str) -> int:
    return int((await instances(wire)).get(hostname, {}).get("status", 0))


async def eventually_async(
    read: Callable[[], Awaitable[object]], expected: object, what: str, within: float = 5.0
) -> None:
    """Await ``read()`` until it returns ``expected`` (deadline, no blind sleep)."""
    deadline = time.monotonic() + within
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value!r}"
        await asyncio.sleep(0.02)
