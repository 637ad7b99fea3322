"""The daemon completes over each MQTT transport the local stack serves, through the same
awsiot builders it uses against AWS IoT Core."""

from __future__ import annotations

import aiohttp
import pytest

from notifier.app import MQTT
from notifier.config import ConfigError
from notifier.daemon import local_settings
from notifier.local.stack import LocalStack
from tests.daemon.conftest import DaemonFactory, call, eventually


@pytest.mark.parametrize("transport", ["custom-auth", "custom-auth-websockets", "tcp"])
async def test_a_completion_arrives_over_each_served_transport(
    stack: LocalStack, daemon_factory: DaemonFactory, http: aiohttp.ClientSession, transport: str
) -> None:
    ports = {
        "custom-auth": stack.broker.tls_port,
        "custom-auth-websockets": stack.broker.wss_port,
        "tcp": stack.broker.port,
    }
    async with daemon_factory(NOTIFIER_MQTT_TRANSPORT=transport) as daemon:
        mqtt = daemon.app[MQTT]
        assert mqtt.port == ports[transport]
        await eventually(lambda: mqtt.connected)
        status, _, ready = await call(http, "GET", f"{daemon.url}/readyz")
        assert status == 200 and ready["mqttTransport"] == transport, ready
        hello, wait = f"{daemon.url}/hello", {"Prefer": "wait=60"}
        status, _, body = await call(http, "POST", hello, json={"via": transport}, headers=wait)
    assert status == 200, body
    assert body["output"]["via"] == transport and body["completedVia"] == "mqtt"


def test_the_default_local_configuration_is_tls_custom_auth(stack: LocalStack) -> None:
    settings = local_settings(stack, env={})
    assert settings.mqtt.transport == "custom-auth"
    assert settings.mqtt.port == stack.broker.tls_port
    assert settings.mqtt.ca_file == str(stack.ca_file)


@pytest.mark.parametrize("transport", ["mtls", "websockets"])
def test_transports_the_local_stack_does_not_serve_are_a_clear_error(
    stack: LocalStack, transport: str
) -> None:
    env = {
        "NOTIFIER_MQTT_TRANSPORT": transport,
        "NOTIFIER_IOTAUTH_ISSUER_URL": "",  # neither uses tokens
        "NOTIFIER_MQTT_CERT_FILE": "device.pem",
        "NOTIFIER_MQTT_KEY_FILE": "device.key",
    }
    with pytest.raises(ConfigError, match=f"serves custom-auth, .*not '{transport}'"):
        local_settings(stack, env=env)
