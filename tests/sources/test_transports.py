"""The daemon completes over each MQTT transport the local stack serves, through the same
awsiot builders it uses against AWS IoT Core; with mtls, as a device whose certificate (from
the stack's CA) is registered with IoT and has a policy attached, as in AWS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import ssl
from typing import Any

import aiohttp
import pytest

from notifier.app.state import MQTT
from notifier.config import ConfigError
from notifier.daemon import Daemon
from notifier.local.certificates import KeyPair
from notifier.local.daemon_config import local_settings
from notifier.local.stack import LocalStack
from tests.support.daemons import DaemonFactory, call, settings_for
from tests.support.eventually import eventually
from tests.support.mqtt import mtls_connection


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


def test_the_websockets_transport_is_not_served_and_says_so(stack: LocalStack) -> None:
    env = {"NOTIFIER_MQTT_TRANSPORT": "websockets", "NOTIFIER_IOTAUTH_ISSUER_URL": ""}
    with pytest.raises(ConfigError, match="serves custom-auth, .*not 'websockets'"):
        local_settings(stack, env=env)


def device_policy(instance_id: str) -> dict[str, Any]:
    """What a daemon's device certificate needs: its completions and the status topics."""
    prefix = "arn:aws:iot:us-east-1:123456789012:"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect",
             "Resource": f"{prefix}client/{instance_id}*"},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
                f"{prefix}topicfilter/notifier/{instance_id}/*",
                f"{prefix}topicfilter/notifier/status/*",
            ]},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": [
                f"{prefix}topic/notifier/{instance_id}/*", f"{prefix}topic/notifier/status/*",
            ]},
        ],
    }  # fmt: skip


async def register_device(stack: LocalStack, name: str, policy: dict[str, Any]) -> KeyPair:
    """A device certificate from the stack's CA, registered with IoT as ACTIVE with ``policy``
    attached (RegisterCertificateWithoutCA, CreatePolicy, AttachPolicy)."""
    assert stack.certificates is not None
    device = stack.certificates.device_certificate(name)
    async with stack.aws().client("iot") as iot:
        registered = await iot.register_certificate_without_ca(
            certificatePem=device.cert_file.read_text(), status="ACTIVE"
        )
        await iot.create_policy(policyName=name, policyDocument=json.dumps(policy))
        await iot.attach_policy(policyName=name, target=registered["certificateArn"])
    return device


async def test_a_completion_arrives_over_mtls_with_a_registered_device_certificate(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    instance = f"device-{secrets.token_hex(4)}"
    device = await register_device(stack, instance, device_policy(instance))
    env = {
        "NOTIFIER_MQTT_TRANSPORT": "mtls",
        "NOTIFIER_IOTAUTH_ISSUER_URL": "",  # no tokens: the certificate is the identity
        "NOTIFIER_MQTT_CERT_FILE": str(device.cert_file),
        "NOTIFIER_MQTT_KEY_FILE": str(device.key_file),
    }
    async with Daemon(settings_for(stack, NOTIFIER_DAEMON_INSTANCE_ID=instance, **env)) as daemon:
        mqtt = daemon.app[MQTT]
        assert mqtt.port == stack.broker.tls_port
        await eventually(lambda: mqtt.connected)
        hello, wait = f"{daemon.url}/hello", {"Prefer": "wait=60"}
        status, _, body = await call(http, "POST", hello, json={"via": "mtls"}, headers=wait)
    assert status == 200, body
    assert body["output"]["via"] == "mtls" and body["completedVia"] == "mqtt"


async def test_a_device_certificate_gets_what_iot_would_give_it(stack: LocalStack) -> None:
    """Refused: unregistered, inactive, or without a policy allowing its client id."""
    assert stack.certificates is not None
    name = f"device-{secrets.token_hex(4)}"
    unregistered = stack.certificates.device_certificate(f"{name}-unregistered")
    registered = await register_device(stack, name, device_policy(name))

    async def connects(device: KeyPair, client_id: str, clean_session: bool = True) -> bool:
        connection = mtls_connection(stack, device, client_id, clean_session)
        try:
            await asyncio.wait_for(asyncio.wrap_future(connection.connect()), 30)
        except Exception:
            return False
        await asyncio.wrap_future(connection.disconnect())
        return True

    # A persistent session resumed with another certificate is judged by that certificate.
    assert await connects(registered, f"{name}-persistent", clean_session=False)
    assert not await connects(unregistered, f"{name}-persistent", clean_session=False)
    assert await connects(registered, name)
    assert not await connects(registered, "someone-else")  # not in its policy
    assert not await connects(unregistered, name)
    async with stack.aws().client("iot") as iot:
        certificate_id = hashlib.sha256(
            ssl.PEM_cert_to_DER_cert(registered.cert_file.read_text())
        ).hexdigest()
        await iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
    assert not await connects(registered, name)
