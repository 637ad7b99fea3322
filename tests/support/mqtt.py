"""An awscrt MQTT subscriber for tests, with a token from the stack's issuer.

Made with awscrt alone rather than the daemon's connection code, so that the broker is
checked by a client other than the one under test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from awscrt import io, mqtt
from awsiot import mqtt_connection_builder

from notifier.aws.iot_tokens import IotToken, TokenIssuer
from notifier.config import IotAuthSettings
from notifier.lifecycle import Service
from notifier.local.broker import LocalBroker
from notifier.local.certificates import KeyPair
from notifier.local.stack import LocalStack
from notifier.sources.mqtt import RESPONSE_TIMEOUT_MS


def tls_connection(stack: LocalStack, token: IotToken | None, client_id: str = "") -> Any:
    """To the stack's MQTT over TLS port, as a client of IoT Core's custom authentication."""
    port = stack.broker.tls_port
    return connection(stack.settings.host, port, token, client_id, str(stack.ca_file))


async def notifier_token(stack: LocalStack, *args: str) -> dict[str, Any]:
    """What ``notifier token ARGS`` prints for ``stack``, configured as
    notifier/local/local.toml is for the default stack (its issuer URL and CA file)."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "notifier"), "token", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "NOTIFIER_IOTAUTH_ISSUER_URL": stack.issuer_url,
            "NOTIFIER_MQTT_CA_FILE": str(stack.ca_file),
        },
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    printed: dict[str, Any] = json.loads(stdout)
    return printed


def issuer_of(stack: LocalStack) -> TokenIssuer:
    settings = IotAuthSettings(issuer_url=stack.issuer_url)
    return TokenIssuer(settings, stack.aws_settings)


async def token_for(stack: LocalStack, subtopic: str | None) -> IotToken:
    """A daemon token for ``subtopic``, or a dashboard token when None."""
    issuer = issuer_of(stack)
    return await (issuer.daemon_token(subtopic) if subtopic else issuer.dashboard_token())


def mtls_connection(
    stack: LocalStack, device: KeyPair, client_id: str, clean_session: bool = True
) -> Any:
    """To the stack's MQTT over TLS port as a device, with its certificate (as IoT Core's
    mtls clients connect, through awsiot's builder)."""
    return mqtt_connection_builder.mtls_from_path(
        cert_filepath=str(device.cert_file),
        pri_key_filepath=str(device.key_file),
        ca_filepath=str(stack.ca_file),
        endpoint=stack.settings.host,
        port=stack.broker.tls_port,
        client_id=client_id,
        clean_session=clean_session,
    )


def connection(
    host: str, port: int, token: IotToken | None, client_id: str = "", ca_file: str | None = None
) -> Any:
    """Plain MQTT, or with ``ca_file`` MQTT over TLS with ALPN ``mqtt`` (verifying the
    broker's certificate against that CA)."""
    tls = None
    if ca_file is not None:
        options = io.TlsContextOptions()
        options.override_default_trust_store_from_path(None, ca_file)
        options.alpn_list = ["mqtt"]
        tls = io.ClientTlsContext(options)
    return mqtt.Connection(
        client=mqtt.Client(io.ClientBootstrap.get_or_create_static_default(), tls),
        host_name=host,
        port=port,
        client_id=token.client_id if token else client_id,
        username=token.username if token else None,
        password=token.password if token else None,
        clean_session=True,
        keep_alive_secs=30,
        # The broker's authorizer Lambda answers CONNECT; a cold one takes a while under load.
        ping_timeout_ms=RESPONSE_TIMEOUT_MS,
        disable_metrics=True,
    )


class MqttRecorder(Service):
    """Subscribes to ``subtopic``'s completions (the status topics when None) with a token
    for them, and collects the messages into an asyncio queue."""

    def __init__(self, stack: LocalStack, subtopic: str | None) -> None:
        self.stack = stack
        self.subtopic = subtopic
        self.messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._connection: Any = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        token = await token_for(self.stack, self.subtopic)

        def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
            loop.call_soon_threadsafe(self.messages.put_nowait, (topic, json.loads(payload)))

        self._connection = tls_connection(self.stack, token)
        await asyncio.wrap_future(self._connection.connect())
        subscribed, _ = self._connection.subscribe(
            token.topic_filters[0], mqtt.QoS.AT_LEAST_ONCE, callback=on_message
        )
        await asyncio.wrap_future(subscribed)

    async def next(self, timeout: float = 60.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def on_topic(self, topic: str, timeout: float = 60.0) -> Any:
        """The next message published to exactly ``topic``; others are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                received, message = await self.messages.get()
                if received == topic:
                    return message

    async def stop(self) -> None:
        await asyncio.wrap_future(self._connection.disconnect())


async def forget_subscriptions(broker: LocalBroker, client_id: str) -> None:
    """Make ``broker`` keep ``client_id``'s session but lose its subscriptions, as a broker
    that says "session present" and delivers nothing would."""
    amqtt = broker._broker
    assert amqtt is not None
    session, _handler = amqtt._sessions[client_id]
    await amqtt._del_all_subscriptions(session)


def connected(broker: LocalBroker, client_id: str) -> bool:
    """Whether ``client_id`` has a live connection to ``broker``."""
    amqtt = broker._broker
    found = amqtt._sessions.get(client_id) if amqtt is not None else None
    return found is not None and found[0].transitions.state == "connected"
