"""The daemon's MQTT token: refreshed under load without losing a request; a refused one
leaves the daemon serving, degraded (that it then recovers: tests/sources/test_mqtt.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import aiohttp
import pytest

from notifier.app.state import MQTT, SQS
from notifier.config import SqsSettings
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from tests.support.daemons import call, refused_mqtt, settings_for
from tests.support.eventually import eventually

HELD = 100


async def test_a_token_refresh_during_held_requests_loses_none(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    # No completion queue: its copies of the completions would race MQTT's, and what is
    # checked is that MQTT, refreshed, delivers every one (a loss would come by poll).
    no_queue = dataclasses.replace(settings_for(stack), sqs=SqsSettings())
    async with Daemon(no_queue) as daemon:
        assert daemon.app.get(SQS) is None
        mqtt = daemon.app[MQTT]
        first_client = mqtt.client_id

        answered = 0

        async def one(n: int) -> tuple[int, dict[str, Any]]:
            nonlocal answered
            status, _, body = await call(
                http,
                "POST",
                f"{daemon.url}/hello",
                json={"n": n, "waitSeconds": 4},
                headers={"Prefer": "wait=110"},
            )
            answered += 1
            return status, body

        def started() -> int:
            return answered + sum(t.started_at is not None for t in daemon.registry.unresolved())

        requests = asyncio.gather(*(one(n) for n in range(HELD)))
        # Every one started (the pool paces starts over its connections' second); on a slow
        # machine the first may have ended before the last started.
        await eventually(lambda: started() == HELD)
        held_at_refresh = daemon.registry.held
        await mqtt.refresh()  # while they are held
        results = await requests

    assert held_at_refresh > 0
    assert mqtt.refreshes == 1 and mqtt.client_id != first_client
    assert [status for status, _ in results] == [200] * HELD
    assert [body["output"]["n"] for _, body in results] == list(range(HELD))
    assert len({body["transactionId"] for _, body in results}) == HELD
    assert all(body["completedVia"] == "mqtt" for _, body in results)


async def test_a_refused_token_is_one_line_and_degraded(
    stack: LocalStack, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    settings = refused_mqtt(settings_for(stack, NOTIFIER_MQTT_RECONNECT_MAX_SECS="1"))
    with caplog.at_level(logging.ERROR, logger="notifier.sources.mqtt"):
        async with Daemon(settings) as daemon:
            mqtt = daemon.app[MQTT]
            status, _, body = await call(http, "GET", f"{daemon.url}/readyz")
            # Serving through the fallbacks: ready, but degraded.
            assert status == 200 and body["ready"] is True and body["state"] == "degraded"
            assert "403" in body["mqttAuthError"]
            status, _, _ = await call(http, "GET", f"{daemon.url}/healthz")
            assert status == 200  # serving all the same
            await eventually(lambda: mqtt.auth_failures >= 3)  # it keeps trying
            assert not mqtt.connected
    failures = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    # One line for the completions' connection, one for the dashboard's status feed.
    assert len(failures) == 2, failures
    assert {f.split(" authentication")[0] for f in failures} == {"MQTT", "MQTT status feed"}
