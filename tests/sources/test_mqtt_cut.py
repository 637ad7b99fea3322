"""MQTT after its link is cut, and MQTT that claims to be connected but delivers nothing:
either way it delivers again within a few seconds, and nothing is answered late meanwhile."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from notifier.app.state import LIVENESS, METRICS, MQTT
from notifier.bench.link import CuttableLink
from notifier.config import Settings, SqsSettings
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from tests.support.daemons import call, settings_for
from tests.support.eventually import eventually
from tests.support.mqtt import forget_subscriptions

LONG = {"Prefer": "wait=60"}


@pytest.fixture
async def link(stack: LocalStack) -> AsyncIterator[CuttableLink]:
    # To the broker's port of the daemon's transport (TLS passes through untouched).
    port = settings_for(stack).mqtt.port
    assert port is not None
    async with CuttableLink(stack.settings.host, port) as running:
        yield running


async def hello(http: aiohttp.ClientSession, daemon: Daemon, n: int, **kwargs: Any) -> str:
    """How a Hello request was completed."""
    headers = kwargs.pop("headers", LONG)
    status, _, body = await call(
        http, "POST", f"{daemon.url}/hello", json={"n": n}, headers=headers, **kwargs
    )
    assert status == 200 and body["output"]["n"] == n, body
    return str(body["completedVia"])


async def readiness(http: aiohttp.ClientSession, daemon: Daemon) -> dict[str, Any]:
    _, _, body = await call(http, "GET", f"{daemon.url}/readyz")
    return body


def through(link: CuttableLink, settings: Settings) -> Settings:
    """``settings`` with MQTT (completions and status feed) reaching the broker by ``link``."""
    return dataclasses.replace(settings, mqtt=dataclasses.replace(settings.mqtt, port=link.port))


@pytest.mark.parametrize("broker_forgets", [False, True], ids=["session kept", "session lost"])
async def test_after_a_cut_mqtt_delivers_again(
    stack: LocalStack, link: CuttableLink, http: aiohttp.ClientSession, broker_forgets: bool
) -> None:
    async with Daemon(through(link, settings_for(stack))) as daemon:
        mqtt = daemon.app[MQTT]
        assert await hello(http, daemon, 0) == "mqtt"
        link.cut()  # silently: nobody learns of it until they send something
        if broker_forgets:  # it says "session present" afterwards all the same
            await forget_subscriptions(stack.broker, mqtt.client_id)
        await eventually(lambda: not mqtt.connected)  # the next ping met the cut
        assert (await readiness(http, daemon))["state"] == "degraded"
        link.restore()
        await eventually(lambda: mqtt.connected)
        assert mqtt.reconnects >= 1
        received = mqtt.received
        for n in range(1, 4):
            await hello(http, daemon, n)
        # MQTT delivered each completion (on a busy machine the queue is sometimes first).
        await eventually(lambda: mqtt.received >= received + 3)
        assert (await readiness(http, daemon))["state"] == "ready"


@pytest.mark.parametrize("queue", [True, False], ids=["with its queue", "without a queue"])
async def test_mqtt_connected_but_deaf_is_noticed_and_replaced(
    stack: LocalStack, http: aiohttp.ClientSession, queue: bool
) -> None:
    settings = settings_for(stack)
    if not queue:
        settings = dataclasses.replace(settings, sqs=SqsSettings())
    async with Daemon(settings) as daemon:
        mqtt, liveness = daemon.app[MQTT], daemon.app[LIVENESS]
        assert await hello(http, daemon, 0) == "mqtt"
        first_client = mqtt.client_id
        await forget_subscriptions(stack.broker, first_client)  # still connected, and deaf
        # Without a queue, the look at the hold deadline answers it.
        headers = LONG if queue else {"Prefer": "wait=3"}
        assert await hello(http, daemon, 1, headers=headers) == ("sqs" if queue else "poll")
        await eventually(lambda: liveness.missed == 1)
        ready = await readiness(http, daemon)
        assert ready["state"] == "degraded" and "did not deliver" in ready["mqttProblem"]
        assert ready["mqttMissed"] == 1
        await eventually(lambda: mqtt.connected and mqtt.client_id != first_client)
        assert await hello(http, daemon, 2) == "mqtt"
        assert liveness.problem is None
        assert (await readiness(http, daemon))["state"] == "ready"
        missed = daemon.app[METRICS].registry.get_sample_value("notifier_mqtt_missed_total")
        assert missed == 1
