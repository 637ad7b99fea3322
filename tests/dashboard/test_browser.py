"""The dashboard in a real browser (headless Chromium): executions appear and finish on the
page, and a pending approval is approved from it. Leaves a screenshot in ``ARTIFACTS``.
And what another site's page can make the same browser send to the daemon: nothing it
takes."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Locator, Page, expect

from tests.dashboard.conftest import save_screenshot
from tests.support.daemons import DaemonFactory, call
from tests.support.eventually import EVENTUALLY, eventually
from tests.support.http_app import serving

TIMEOUT_MS = EVENTUALLY * 1000


def row(page: Page, name: str, status: str | None = None) -> Locator:
    selector = f'#executions tr[data-name="{name}"]'
    if status is not None:
        selector += f'[data-status="{status}"]'
    return page.locator(selector)


async def test_watch_executions_and_approve_one_in_the_browser(
    browser: Browser, daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    async with daemon_factory(approvals=True) as daemon:
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # What the page's Content-Security-Policy would block is logged as a console error.
        page.on(
            "console",
            lambda message: (
                errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )
        await page.goto(daemon.url)
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        await expect(page.locator("#instance")).to_have_text(daemon.instance_id)

        # Started from the page's own form.
        await page.select_option("#route", "hello")
        await page.fill("#input", json.dumps({"waitSeconds": 1}))
        await page.click("#run-form button[type=submit]")
        await expect(page.locator("#run-result")).to_contain_text("SUCCEEDED (200)")
        from_form = (await page.locator("#run-result").inner_text()).split(":")[0]
        await expect(row(page, from_form, "SUCCEEDED")).to_have_count(1)
        await expect(row(page, from_form).locator("td").nth(5)).to_have_text("mqtt")

        # Started by HTTP clients: they appear while running, then finish.
        held = [
            asyncio.ensure_future(
                call(http, "POST", f"{daemon.url}/hello", json={"waitSeconds": 3})
            )
            for _ in range(2)
        ]
        await eventually(lambda: daemon.registry.held == 2)
        names = [txn.txn_id for txn in daemon.registry.unresolved()]
        for name in names:
            await expect(row(page, name, "RUNNING")).to_have_count(1)
        assert [answer[0] for answer in await asyncio.gather(*held)] == [200, 200]
        for name in names:
            await expect(row(page, name, "SUCCEEDED")).to_have_count(1)

        # An archive that waits for a person, approved on the page.
        archive = asyncio.ensure_future(
            call(
                http,
                "POST",
                f"{daemon.url}/archive",
                json={"approval_needed": True, "archive": True, "quality": 88},
            )
        )
        await eventually(lambda: daemon.registry.held == 1)
        [txn] = list(daemon.registry.unresolved())
        request = page.locator(f'#approvals li[data-execution-name="{txn.txn_id}"]')
        await expect(request).to_have_count(1)
        await expect(row(page, txn.txn_id, "RUNNING")).to_have_count(1)
        await request.locator("input.comment").fill("checked by the browser test")
        await save_screenshot(page, "dashboard-approval.png")
        await request.locator("button.approve").click()
        status, _, answer = await archive
        assert status == 200
        assert answer["output"]["approval"]["comment"] == "checked by the browser test"
        await expect(request).to_have_count(0)
        await expect(row(page, txn.txn_id, "SUCCEEDED")).to_have_count(1)

        # Its details: input, output and the steps it went through.
        await row(page, txn.txn_id).click()
        await expect(page.locator("#detail")).to_be_visible()
        await expect(page.locator("#history li").first).to_contain_text("ExecutionStarted")
        await expect(page.locator("#history")).to_contain_text("RequestApproval")
        await expect(page.locator("#detail-body")).to_contain_text('"quality": 88')
        await save_screenshot(page, "dashboard.png")
        assert errors == []
        await page.close()


FOREIGN_PAGE = """<!doctype html>
<form method="post" enctype="text/plain" action="{target}">
  <input name='{{"foo": "' value='bar"}}'>
</form>
"""
CROSS_SITE_FETCHES = """async (url) => {
  const body = '{"foo": "bar"}';
  const sent = {};
  // A "simple" request: sent without asking, its answer unreadable to the page.
  const text = {"Content-Type": "text/plain"};
  await fetch(url, {method: "POST", mode: "no-cors", body, headers: text});
  sent.simple = "sent";
  try {  // JSON needs the daemon's consent first (a CORS preflight), which it does not give.
    const json = {"Content-Type": "application/json"};
    const answer = await fetch(url, {method: "POST", body, headers: json});
    sent.json = answer.status;
  } catch (error) {
    sent.json = "refused";
  }
  return sent;
}"""


async def test_another_sites_page_makes_the_browser_start_nothing(browser: Browser) -> None:
    """With API keys off (the local default), a page of another site (``localhost`` is not
    ``127.0.0.1``) submits a form to a route and its script posts to it: the daemon refuses
    them all, and no workflow starts."""
    async with serving() as served:
        target = str(served.client.make_url("/hello"))
        assert target.startswith("http://127.0.0.1:")

        async def foreign_page(request: web.Request) -> web.Response:
            return web.Response(text=FOREIGN_PAGE.format(target=target), content_type="text/html")

        site = web.Application()
        site.router.add_get("/", foreign_page)
        async with TestServer(site, host="127.0.0.1") as foreign:
            page = await browser.new_page()
            await page.goto(f"http://localhost:{foreign.port}/")
            assert await page.evaluate(CROSS_SITE_FETCHES, target) == {
                "simple": "sent",
                "json": "refused",
            }
            # The form: the browser shows the daemon's answer, so it did reach the daemon.
            async with page.expect_navigation(url=target):
                await page.evaluate("document.forms[0].submit()")
            answer = json.loads(await page.locator("body").inner_text())
            assert "another origin (http://localhost:" in answer["message"]
            await page.close()
        assert served.executions.started.empty()
