"""Approval links: the signed token, the confirmation page that decides nothing and its POST
that decides once, and a link followed from the approval topic's message on the local stack."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from notifier.config_loader import load_settings
from notifier.dashboard.approval_links import ApprovalLinks, LinkError
from notifier.dashboard.approval_table import Decision
from notifier.dashboard.web import approval_links
from notifier.local.stack import LocalStack
from tests.dashboard.test_web import archive_awaiting_approval
from tests.local.test_workflows import subscribed_queue, take_message
from tests.support.daemons import DaemonFactory
from tests.support.http_app import serving
from tests.test_config import MINIMAL, refusal, write

SECRET = "s" * 40
PUBLIC = "https://notifier.example/base"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock, secret: str = SECRET) -> ApprovalLinks:
    return ApprovalLinks(secret.encode(), PUBLIC, 3600.0, clock)


def parts(link: str) -> tuple[str, str, str]:
    """The path (below the public URL), decision and token of ``link``."""
    split = urlsplit(link.removeprefix(PUBLIC))
    query = parse_qs(split.query)
    return split.path, query["d"][0], query["t"][0]


def test_a_link_decides_its_own_request_its_own_way_until_it_expires() -> None:
    clock = Clock()
    links = signer(clock)
    link = links.link("a1", "approve")
    assert link.startswith(f"{PUBLIC}/approvals/a1/link?d=approve&t=")
    _, decision, token = parts(link)
    assert links.check("a1", decision, token) is Decision.APPROVED
    _, decision, reject = parts(links.link("a1", "reject"))
    assert links.check("a1", decision, reject) is Decision.REJECTED

    def refused(approval_id: str, decision: str, token: str) -> int:
        with pytest.raises(LinkError) as raised:
            links.check(approval_id, decision, token)
        return raised.value.status

    # Another decision, another request, another secret, a changed expiry or signature.
    assert refused("a1", "reject", token) == 403
    assert refused("a2", "approve", token) == 403
    _, _, foreign = parts(signer(clock, "t" * 40).link("a1", "approve"))
    assert refused("a1", "approve", foreign) == 403
    expires, signature = token.split(".")
    assert refused("a1", "approve", f"{int(expires) + 3600}.{signature}") == 403
    assert refused("a1", "approve", f"{expires}.{signature[:-1]}A") in (403,)
    assert refused("a1", "approve", "") == 400
    assert refused("a1", "approve", f"x.{signature}") == 400
    assert refused("a1", "maybe", token) == 400
    # Valid to its last second, expired from then on.
    clock.now += 3599
    assert links.check("a1", "approve", token) is Decision.APPROVED
    clock.now += 1
    assert refused("a1", "approve", token) == 410


LINKED = (
    MINIMAL
    + "[dashboard]\n"
    + 'approval_queue_url = "https://sqs.us-east-1.amazonaws.com/1/approvals"\n'
    + 'approval_table = "approvals"\n'
    + 'approval_topic_arn = "arn:aws:sns:us-east-1:1:approvals"\n'
    + 'public_url = "https://notifier.example"\n'
)
WITH_SECRET = {"NOTIFIER_DASHBOARD_APPROVAL_LINK_SECRET": SECRET}


def test_the_link_secret_comes_from_the_environment_only(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, LINKED), WITH_SECRET)
    assert settings.dashboard.approval_link_secret == SECRET
    assert approval_links(settings.dashboard) is not None
    in_file = LINKED + f'approval_link_secret = "{SECRET}"\n'
    assert "approval_link_secret: a secret does not belong" in refusal(tmp_path, in_file, {})
    # Not even for the local stack, whose own credentials are published.
    local = in_file + '[aws]\nendpoint_url = "http://127.0.0.1:4566"\n'
    assert "approval_link_secret: a secret does not belong" in refusal(tmp_path, local, {})
    assert "approval_link_secret: approval links need both" in refusal(tmp_path, LINKED, {})
    short = {"NOTIFIER_DASHBOARD_APPROVAL_LINK_SECRET": "short"}
    assert "at least 32 characters" in refusal(tmp_path, LINKED, short)
    # Without a public URL and a secret there are no links; the topic alone is no error.
    topic_only = LINKED.replace('public_url = "https://notifier.example"\n', "")
    assert approval_links(load_settings(write(tmp_path, topic_only), {}).dashboard) is None
    # Nor without the topic, which the log says.
    no_topic = LINKED.replace('approval_topic_arn = "arn:aws:sns:us-east-1:1:approvals"\n', "")
    assert approval_links(load_settings(write(tmp_path, no_topic), WITH_SECRET).dashboard) is None


async def test_opening_a_link_decides_nothing_and_its_form_decides_once() -> None:
    clock = Clock()
    links = signer(clock)
    async with serving(inbox=True, links=links) as served:
        assert served.inbox is not None
        served.inbox.add("a1")
        path, decision, token = parts(links.link("a1", "reject"))
        params = {"d": decision, "t": token}

        for _ in range(3):  # a scanner, a preview, the person
            page = await served.client.get(path, params=params)
            text = await page.text()
            assert page.status == 200 and page.content_type == "text/html"
            assert '<form method="post">' in text and "Reject a1?" in text
            assert "<script" not in text
            assert page.headers["Cache-Control"] == "no-store"
            assert page.headers["Referrer-Policy"] == "same-origin"
        assert served.inbox.decided == {}

        # Not with another decision's token, nor once expired.
        tampered = await served.client.post(path, params={"d": "approve", "t": token})
        assert tampered.status == 403
        clock.now += 3600
        assert (await served.client.post(path, params=params)).status == 410
        clock.now -= 3600
        assert served.inbox.decided == {}

        # The form's POST (a browser sends the comment as a form) decides.
        posted = await served.client.post(path, params=params, data={"comment": "not now"})
        assert posted.status == 200, await posted.text()
        assert "rejected" in await posted.text()
        assert served.inbox.decided == {"a1": "rejected"}
        assert served.inbox.decided_by == {"a1": "link"}

        # Once: the link again, opened or posted, says it was decided.
        again = await served.client.post(path, params=params)
        assert again.status == 409 and "decided: rejected" in await again.text()
        opened = await served.client.get(path, params=params)
        assert opened.status == 409 and "<form" not in await opened.text()

        # Other routes still take no form.
        form = await served.client.post("/approvals/a1", data={"approved": "true"})
        assert form.status == 415


async def test_without_links_configured_a_link_finds_nothing() -> None:
    async with serving(inbox=True) as served:
        assert served.inbox is not None
        served.inbox.add("a1")
        path, decision, token = parts(signer(Clock()).link("a1", "approve"))
        page = await served.client.get(path, params={"d": decision, "t": token})
        assert page.status == 404
        assert served.inbox.decided == {}


LINK_SETTINGS = {
    "NOTIFIER_DASHBOARD_PUBLIC_URL": PUBLIC,
    "NOTIFIER_DASHBOARD_APPROVAL_LINK_SECRET": SECRET,
}


async def test_a_link_from_the_approval_topic_approves_the_held_request(
    daemon_factory: DaemonFactory, stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    async with subscribed_queue(stack, "ApprovalTopicArn") as (sqs, queue_url):
        async with daemon_factory(approvals=True, **LINK_SETTINGS) as daemon:
            held, name, approval = await archive_awaiting_approval(http, daemon)
            message = await take_message(sqs, queue_url, lambda b: b.get("executionName") == name)
            assert message["id"] == approval["id"]
            assert message["file"] == approval["file"]
            assert message["approve"].startswith(f"{PUBLIC}/approvals/{approval['id']}/link?")
            # The public URL is where a reader reaches the daemon; here, its own port.
            approve = daemon.url + message["approve"].removeprefix(PUBLIC)
            reject = daemon.url + message["reject"].removeprefix(PUBLIC)

            async with http.get(approve) as page:
                assert page.status == 200 and "<form" in await page.text()
            await asyncio.sleep(0.5)  # a GET that decided would have answered the workflow
            assert not held.done()
            assert approval["id"] in await pending_ids(http, daemon)

            # The form's POST, as a browser sends it from the page: same origin, a form.
            origin = {"Origin": daemon.url}
            async with http.post(approve, data={"comment": "by mail"}, headers=origin) as done:
                assert done.status == 200, await done.text()
            status, _, answer = await held
            assert status == 200
            assert answer["output"]["action"] == "Archived"
            assert answer["output"]["approval"] == {"approved": True, "comment": "by mail"}
            assert approval["id"] not in await pending_ids(http, daemon)

            for link in (approve, reject):
                async with http.post(link, headers=origin) as again:
                    assert again.status == 409
                    assert "decided: approved" in await again.text()
        # Recorded like any other decision: by whom, how and why.
        async with stack.aws().client("dynamodb") as dynamodb:
            item = (
                await dynamodb.get_item(
                    TableName=stack.outputs["ApprovalTableName"],
                    Key={"Id": {"S": approval["id"]}},
                )
            )["Item"]
    assert item["Outcome"]["S"] == "approved"
    assert item["DecidedBy"]["S"] == "link"
    assert item["DecisionComment"]["S"] == "by mail"


async def pending_ids(http: aiohttp.ClientSession, daemon: Any) -> list[str]:
    async with http.get(f"{daemon.url}/approvals") as response:
        return [a["id"] for a in json.loads(await response.text())["approvals"]]


async def test_a_person_follows_a_rejection_link_in_a_browser(
    daemon_factory: DaemonFactory,
    stack: LocalStack,
    http: aiohttp.ClientSession,
    browser: Browser,
) -> None:
    """Chromium opens the link and submits the page's form: the daemon takes it as its own
    page's (keys off, its Origin checked)."""
    async with (
        subscribed_queue(stack, "ApprovalTopicArn") as (sqs, queue_url),
        daemon_factory(approvals=True, **LINK_SETTINGS) as daemon,
    ):
        assert not daemon.settings.http.require_api_key
        held, name, _ = await archive_awaiting_approval(http, daemon)
        message = await take_message(sqs, queue_url, lambda b: b.get("executionName") == name)
        page = await browser.new_page()
        await page.goto(daemon.url + message["reject"].removeprefix(PUBLIC))
        await expect(page.locator("h1")).to_contain_text(f"Reject {name}?")
        await page.locator("textarea").fill("not this file")
        await page.locator("button").click()
        await expect(page.locator("h1")).to_contain_text("Thank you: rejected")
        status, _, answer = await held
        assert status == 200
        assert answer["output"]["approval"] == {"approved": False, "comment": "not this file"}
        await page.close()
