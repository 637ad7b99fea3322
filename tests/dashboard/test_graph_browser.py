"""Executions drawn as graphs in a real browser (headless Chromium): every state of each of
the stack's five workflows, a failed ProcessA step coloured failed, and an Archive run
waiting for its approval, decided from its page, which follows it to its end. Leaves
screenshots in ``ARTIFACTS``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from notifier.config import RouteSettings
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from tests.dashboard.conftest import save_screenshot
from tests.dashboard.test_graph import deployed_states
from tests.support.daemons import call, settings_for
from tests.support.eventually import EVENTUALLY, eventually

TIMEOUT_MS = EVENTUALLY * 1000


@pytest.fixture(scope="module")
async def graph_daemon(stack: LocalStack) -> AsyncIterator[Daemon]:
    """A daemon taking approvals, with Downstream (which ProcessA starts) as a route too."""
    settings = settings_for(stack, approvals=True)
    downstream = RouteSettings(stack.outputs["DownstreamStateMachineArn"], input="body")
    settings = dataclasses.replace(settings, routes={**settings.routes, "downstream": downstream})
    async with Daemon(settings) as daemon:
        yield daemon


async def graph_page(browser: Browser, daemon: Daemon, transaction_id: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    await page.goto(f"{daemon.url}/dashboard/executions/{transaction_id}")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def state(page: Page, name: str, status: str | None = None):  # type: ignore[no-untyped-def]
    selector = f'#graph-svg g[data-state="{name}"]'
    if status is not None:
        selector += f'[data-status="{status}"]'
    return page.locator(selector)


@pytest.mark.parametrize(
    ("route", "workflow", "body"),
    [
        ("hello", "hello", {}),
        ("p1", "processa", {"foo": "foo val"}),
        ("qc", "qc", {"GroupID": "g1", "StreamID": "s1"}),
        ("archive", "archive", {"archive": True, "quality": 80}),
        ("downstream", "downstream", {}),
    ],
)
async def test_every_state_of_each_workflow_is_drawn(
    browser: Browser,
    graph_daemon: Daemon,
    http: aiohttp.ClientSession,
    route: str,
    workflow: str,
    body: dict[str, object],
) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    status, _, answer = await call(http, "POST", f"{graph_daemon.url}/{route}", json=body)
    assert (status, answer["status"]) == (200, "SUCCEEDED"), answer
    page = await graph_page(browser, graph_daemon, answer["transactionId"])
    await expect(page.locator("#execution-status")).to_have_text("SUCCEEDED")
    states = deployed_states(workflow)
    for name in states:
        await expect(state(page, name)).to_have_count(1)
        await expect(state(page, name).locator("text")).to_have_text(name)
    await expect(state(page, "Done", "succeeded")).to_have_count(1)
    await expect(page.locator('#graph-svg g[data-status="failed"]')).to_have_count(0)
    if "Failed" in states:
        await expect(state(page, "Failed", "not-reached")).to_have_count(1)
    await save_screenshot(page, f"execution-{workflow}.png")
    assert page.errors == []  # type: ignore[attr-defined]
    await page.close()


async def test_a_failed_processa_step_is_coloured_failed(
    browser: Browser, graph_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    body = {"foo": "foo val", "fail": "step-c"}
    status, _, answer = await call(http, "POST", f"{graph_daemon.url}/p1", json=body)
    assert (status, answer["status"]) == (502, "FAILED"), answer
    page = await graph_page(browser, graph_daemon, answer["transactionId"])
    await expect(state(page, "StepC", "failed")).to_have_count(1)
    for passed in ("StepA", "StepB"):
        await expect(state(page, passed, "succeeded")).to_have_count(1)
    for skipped in ("StepD", "StepE", "StepF", "NotifySuccess", "NotifyPointer", "Done"):
        await expect(state(page, skipped, "not-reached")).to_have_count(1)
    await expect(state(page, "Failed", "failed")).to_have_count(1)
    await state(page, "StepC").click()
    await expect(page.locator("#state-title")).to_have_text("StepC: failed")
    await expect(page.locator("#state-body")).to_contain_text("ForcedFailure")
    await save_screenshot(page, "execution-failed.png")
    assert page.errors == []  # type: ignore[attr-defined]
    await page.close()


async def test_an_archive_run_waits_for_its_approval_on_its_page(
    browser: Browser, graph_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    body = {"approval_needed": True, "archive": True, "quality": 91}
    held = asyncio.ensure_future(call(http, "POST", f"{graph_daemon.url}/archive", json=body))
    await eventually(lambda: graph_daemon.registry.held == 1)
    [txn] = list(graph_daemon.registry.unresolved())
    page = await graph_page(browser, graph_daemon, txn.txn_id)
    await expect(state(page, "RequestApproval", "waiting")).to_have_count(1)
    await expect(state(page, "GetFileMetadata", "succeeded")).to_have_count(1)
    await expect(state(page, "RecordResult", "not-reached")).to_have_count(1)
    await expect(page.locator("#approval")).to_be_visible()
    await page.locator("#approval input.comment").fill("approved on the graph")
    await save_screenshot(page, "execution-approval.png")
    await page.locator("#approval button.approve").click()
    status, _, answer = await held
    assert (status, answer["output"]["approval"]["comment"]) == (200, "approved on the graph")
    # The page follows the execution to its end.
    await expect(page.locator("#execution-status")).to_have_text("SUCCEEDED")
    await expect(state(page, "RequestApproval", "succeeded")).to_have_count(1)
    await expect(state(page, "Archived", "succeeded")).to_have_count(1)
    await expect(page.locator("#approval")).to_be_hidden()
    assert page.errors == []  # type: ignore[attr-defined]
    await page.close()


async def test_the_main_page_links_each_execution_and_charts_the_daemon(
    browser: Browser, graph_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    await page.goto(graph_daemon.url)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    status, _, answer = await call(http, "POST", f"{graph_daemon.url}/hello", json={})
    assert status == 200 and answer["completedVia"] == "mqtt"
    # Completions by path: a line for MQTT once two readings apart.
    await expect(page.locator('#chart-completions path[data-series="mqtt"]')).to_have_count(1)
    await expect(page.locator('#legend-held [data-series="capacity"]')).to_contain_text(
        str(graph_daemon.settings.http.max_held)
    )
    await expect(page.locator('#chart-latency path[data-series="p99"]')).to_have_count(1)
    await save_screenshot(page, "dashboard-charts.png")
    link = page.locator(f'#executions tr[data-name="{answer["transactionId"]}"] td.name a')
    await link.click()
    await expect(page).to_have_url(
        f"{graph_daemon.url}/dashboard/executions/{answer['transactionId']}"
    )
    await expect(state(page, "SayHello", "succeeded")).to_have_count(1)
    await page.close()
