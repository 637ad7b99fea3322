"""``completion = "poll"``: no MQTT at all; held requests are answered from DescribeExecution."""

from __future__ import annotations

import dataclasses

import aiohttp

from notifier.app.state import MQTT, RECONCILER
from notifier.config import SqsSettings
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from tests.support.daemons import call, settings_for


async def test_poll_mode_answers_without_mqtt(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    settings = settings_for(
        stack, NOTIFIER_DAEMON_COMPLETION="poll", NOTIFIER_DAEMON_POLL_INTERVAL="0.3"
    )
    # Neither MQTT nor the queue: DescribeExecution alone.
    settings = dataclasses.replace(settings, sqs=SqsSettings())
    async with Daemon(settings) as daemon:
        assert MQTT not in daemon.app
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert status == 200 and ready["state"] == "ready" and ready["completion"] == "poll"
        for route, payload, expected in (
            ("hello", {"waitSeconds": 1}, 200),
            ("quiet", {"waitSeconds": 0, "fail": True}, 502),
        ):
            status, _, body = await call(
                http, "POST", f"{daemon.url}/{route}", json=payload, headers={"Prefer": "wait=60"}
            )
            assert (status, body["completedVia"]) == (expected, "poll"), body
        assert daemon.app[RECONCILER].calls >= 2
        async with http.get(f"{daemon.url}/metrics") as response:
            text = await response.text()
    assert "notifier_mqtt_connected" not in text
