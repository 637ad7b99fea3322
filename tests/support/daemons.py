"""Daemons against the local stack, on free ports, and calling them."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp

from notifier.config import ApiKeySettings, RouteSettings, Settings
from notifier.daemon import Daemon
from notifier.local.daemon_config import local_settings
from notifier.local.stack import LocalStack
from tests.support.eventually import EVENTUALLY

TIMEOUT_MACHINE = {
    "Comment": "Test-only: runs into its own TimeoutSeconds.",
    "TimeoutSeconds": 1,
    "StartAt": "Sleep",
    "States": {"Sleep": {"Type": "Wait", "Seconds": 30, "End": True}},
}


def requiring_api_key(settings: Settings, name: str, key: ApiKeySettings) -> Settings:
    """``settings`` with API keys required and ``key`` the one known, as ``name``."""
    http = dataclasses.replace(settings.http, require_api_key=True)
    return dataclasses.replace(settings, http=http, api_keys={name: key})


def refused_mqtt(settings: Settings) -> Settings:
    """``settings`` with an issuer URL the token API refuses (403, as API Gateway answers a
    path it has no resource for): MQTT never connects."""
    assert settings.iotauth.issuer_url is not None
    iotauth = dataclasses.replace(
        settings.iotauth, issuer_url=f"{settings.iotauth.issuer_url}/refused"
    )
    return dataclasses.replace(settings, iotauth=iotauth)


def settings_for(stack: LocalStack, *, approvals: bool = False, **env: str) -> Settings:
    """notifier/local/local.toml against ``stack``, on a free port, with NOTIFIER_* overrides.

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
        dashboard = dataclasses.replace(dashboard, approval_queue_url=None, approval_table=None)
    return dataclasses.replace(settings, routes=routes, dashboard=dashboard)


DaemonFactory = Callable[..., AbstractAsyncContextManager[Daemon]]


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, dict(response.headers), await response.json()


async def until_ended(stack: LocalStack, arns: Iterable[str]) -> None:
    """Until the executions ``arns`` have ended, as Step Functions tells (not the daemon,
    which may not know)."""
    async with stack.aws().client("stepfunctions") as sfn, asyncio.timeout(EVENTUALLY):
        for arn in arns:
            while (await sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":  # noqa: ASYNC110
                await asyncio.sleep(0.2)
