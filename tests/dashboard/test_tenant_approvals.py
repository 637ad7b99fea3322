"""Owners and roles across instances, on the local stack: an execution alice started through
one daemon is hers at the other too (its owner is read from Step Functions), another client
neither sees nor decides it, she may not decide it herself, and an approver decides it
through the other instance, recorded as the decider."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp

from notifier.apikeys import hash_key, new_key
from notifier.config import ApiKeySettings
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from tests.support.daemons import call, settings_for
from tests.support.eventually import eventually

KEYS = {name: new_key() for name in ("alice", "bob", "carol", "root")}
ROLES = {"carol": ("approver",), "root": ("admin",)}


def as_key(name: str) -> dict[str, str]:
    return {"x-api-key": KEYS[name]}


def with_tenants(stack: LocalStack) -> Daemon:
    settings = settings_for(stack, approvals=True)
    keys = {
        name: ApiKeySettings(sha256=hash_key(key), rate=100, burst=100, roles=ROLES.get(name, ()))
        for name, key in KEYS.items()
    }
    http = dataclasses.replace(settings.http, require_api_key=True)
    return Daemon(dataclasses.replace(settings, http=http, api_keys=keys))


async def test_an_approver_decides_through_another_instance_and_no_other_key_can(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    async with with_tenants(stack) as first, with_tenants(stack) as second:
        archive = asyncio.ensure_future(
            call(
                http, "POST", f"{first.url}/archive",
                json={"approval_needed": True, "archive": True, "quality": 70},
                headers={**as_key("alice"), "Prefer": "wait=60"},
            )
        )  # fmt: skip
        await eventually(lambda: first.registry.held == 1)
        [txn] = list(first.registry.unresolved())

        async def pending() -> list[dict[str, str]]:
            status, _, body = await call(
                http, "GET", f"{second.url}/approvals", headers=as_key("carol")
            )
            assert status == 200
            return [a for a in body["approvals"] if a["executionName"] == txn.txn_id]

        approval = None
        for _ in range(600):
            if found := await pending():
                approval = found[0]
                break
            await asyncio.sleep(0.1)
        assert approval is not None, "the approval never reached the table"
        decide = f"{second.url}/approvals/{approval['id']}"

        # At the other instance, the execution is alice's (its input says so): bob gets 404.
        reattach = f"{second.url}/executions/{txn.txn_id}?wait=0"
        status, _, _ = await call(http, "GET", reattach, headers=as_key("bob"))
        assert status == 404
        status, _, body = await call(http, "GET", reattach, headers=as_key("alice"))
        assert status == 202 and body["transactionId"] == txn.txn_id
        status, _, _ = await call(http, "GET", reattach, headers=as_key("root"))
        assert status == 202

        # Clients decide nothing; alice may not decide her own even as an approver would.
        for name in ("alice", "bob", "root"):
            status, _, _ = await call(
                http, "POST", decide, json={"approved": True}, headers=as_key(name)
            )
            assert status == 403, name
        assert await pending(), "a refused decision left the approval pending"

        status, _, body = await call(
            http, "POST", decide, json={"approved": True, "comment": "ok"}, headers=as_key("carol")
        )
        assert (status, body["decision"]) == (200, "approved")
        status, _, answer = await archive
        assert status == 200, answer
        assert answer["output"]["approval"]["comment"] == "ok"

        # The decider and the decision stay recorded in the shared table.
        async with stack.aws().client("dynamodb") as dynamodb:
            item = (
                await dynamodb.get_item(
                    TableName=stack.outputs["ApprovalTableName"],
                    Key={"Id": {"S": approval["id"]}},
                    ConsistentRead=True,
                )
            )["Item"]
        assert (item["Outcome"]["S"], item["DecidedBy"]["S"]) == ("approved", "carol")
