"""The daemon end to end: the local stack (once per session) and daemons on free ports."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from notifier.config import ApiKeySettings, RouteSettings, Settings
from notifier.daemon import Daemon, local_settings
from notifier.local.stack import LocalStack
from tests.silent_workflows import create_silent_workflows

# Never reached by a passing test; only bounds a hung one.
EVENTUALLY = 60.0

TIMEOUT_MACHINE = {
    "Comment": "Test-only: runs into its own TimeoutSeconds.",
    "TimeoutSeconds": 1,
    "StartAt": "Sleep",
    "States": {"Sleep": {"Type": "Wait", "Seconds": 30, "End": True}},
}


@pytest.fixture(scope="session")
async def stack(local_stack: LocalStack) -> LocalStack:
    async with local_stack.aws().client("stepfunctions") as sfn:
        created = await sfn.create_state_machine(
            name="notifier-test-TimesOut",
            definition=json.dumps(TIMEOUT_MACHINE),
            roleArn="arn:aws:iam::123456789012:role/notifier-test",
        )
    local_stack.outputs["TestTimesOutStateMachineArn"] = created["stateMachineArn"]
    await create_silent_workflows(local_stack)
    return local_stack


def requiring_api_key(settings: Settings, name: str, key: ApiKeySettings) -> Settings:
    """``settings`` with API keys required and ``key`` the one known, as ``name``."""
    http = dataclasses.replace(settings.http, require_api_key=True)
    return dataclasses.replace(settings, http=http, api_keys={name: key})


def refused_mqtt(settings: Settings) -> Settings:
    """``settings`` with credentials the token API refuses (the AWS endpoint takes any):
    MQTT never connects."""
    aws = dataclasses.replace(settings.aws, secret_access_key="not-the-secret")
    return dataclasses.replace(settings, aws=aws)


def settings_for(stack: LocalStack, *, approvals: bool = False, **env: str) -> Settings:
    """config/local.toml against ``stack``, on a free port, with NOTIFIER_* overrides.

    Only with ``approvals`` does the daemon take requests off the stack's approval queue,
    which would otherwise keep them from the tests that read that queue themselves.
    """
    base = {
        "NOTIFIER_HTTP_PORT": "0",
        "NOTIFIER_DAEMON_INSTANCE_ID": f"test-{secrets.token_hex(4)}",
        "NOTIFIER_DAEMON_POLL_INTERVAL": "0.5",
        # Back soon after the tests that restart the broker.
        "NOTIFIER_MQTT_RECONNECT_MAX_SECS": "2",
    }
    settings = local_settings(stack, env={**base, **env})
    routes = {
        **settings.routes,
        "timesout": RouteSettings(stack.outputs["TestTimesOutStateMachineArn"], input="body"),
        "silent": RouteSettings(stack.outputs["TestSilentStateMachineArn"], input="body"),
        "quiet": RouteSettings(stack.outputs["TestQuietStateMachineArn"], input="body"),
        "silent-timeout": RouteSettings(
            stack.outputs["TestSilentTimeoutStateMachineArn"], input="body"
        ),
        "missing": RouteSettings(
            "arn:aws:states:us-east-1:123456789012:stateMachine:notifier-test-Missing",
            input="body",
        ),
    }
    dashboard = settings.dashboard
    if not approvals:
        dashboard = dataclasses.replace(dashboard, approval_queue_url=None)
    return dataclasses.replace(settings, routes=routes, dashboard=dashboard)


DaemonFactory = Callable[..., AbstractAsyncContextManager[Daemon]]


@pytest.fixture(scope="session")
def daemon_factory(stack: LocalStack) -> DaemonFactory:
    @asynccontextmanager
    async def start(*, approvals: bool = False, **env: str) -> AsyncIterator[Daemon]:
        async with Daemon(settings_for(stack, approvals=approvals, **env)) as daemon:
            yield daemon

    return start


@pytest.fixture(scope="session")
async def daemon(daemon_factory: DaemonFactory) -> AsyncIterator[Daemon]:
    async with daemon_factory() as running:
        yield running


@pytest.fixture(scope="session")
async def other_daemon(daemon_factory: DaemonFactory) -> AsyncIterator[Daemon]:
    """A second instance on the same stack."""
    async with daemon_factory() as running:
        yield running


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, dict(response.headers), await response.json()


async def eventually(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(EVENTUALLY):
        while not predicate():  # noqa: ASYNC110 (watches daemon state that has no event)
            await asyncio.sleep(0.02)
