"""iotauth on the local stack: the template's secret, authorizer and Lambdas, and the broker."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import botocore.session
import pytest
from awscrt import io, mqtt
from awscrt.exceptions import AwsCrtError

from iotauth import tokens
from notifier.aws.iot_tokens import IotToken, TokenError, TokenIssuer
from notifier.config import IotAuthSettings
from notifier.local.stack import LocalStack
from tests.local.test_workflows import new_id
from tests.support.mqtt import connection as mqtt_connection
from tests.support.mqtt import issuer_of, notifier_token, tls_connection, token_for


async def invoke(stack: LocalStack, function: str, event: dict[str, Any]) -> Any:
    async with stack.aws().client("lambda") as awslambda:
        response = await awslambda.invoke(FunctionName=function, Payload=json.dumps(event))
        return json.loads(await response["Payload"].read())


async def test_the_template_creates_the_secret_and_the_authorizer(local_stack: LocalStack) -> None:
    outputs = local_stack.outputs
    async with local_stack.aws().client("secretsmanager") as secrets:
        value = await secrets.get_secret_value(SecretId=outputs["SigningSecretArn"])
    assert len(value["SecretString"]) == 64 and value["SecretString"].isalnum()
    async with local_stack.aws().client("iot") as iot:
        described = await iot.describe_authorizer(authorizerName=outputs["TokenAuthorizerName"])
    authorizer = described["authorizerDescription"]
    assert authorizer["status"] == "ACTIVE" and authorizer["signingDisabled"] is True
    assert authorizer["authorizerFunctionArn"] == outputs["TokenAuthorizerFunctionArn"]


async def test_deployed_issuer_and_authorizer_agree(local_stack: LocalStack) -> None:
    outputs = local_stack.outputs
    proxy_event = {
        "resource": "/tokens/daemon/{subtopic}",
        "path": "/tokens/daemon/bridge-test",
        "httpMethod": "POST",
        "pathParameters": {"subtopic": "bridge-test"},
    }
    issued = await invoke(local_stack, outputs["TokenIssuerFunctionArn"], proxy_event)
    assert issued["statusCode"] == 200
    token = json.loads(issued["body"])
    assert token["topicFilters"] == [f"{local_stack.settings.topic_root}/bridge-test/#"]
    assert token["authorizerName"] == outputs["TokenAuthorizerName"]
    endpoint = (local_stack.settings.host, local_stack.broker.tls_port)
    assert (token["endpoint"], token["port"]) == endpoint  # MQTT over TLS, as IoT Core

    password = base64.b64encode(token["token"].encode()).decode()
    connect = {
        "signatureVerified": False,
        "protocols": ["mqtt"],
        "protocolData": {"mqtt": {"username": "u", "password": password, "clientId": "x"}},
        "connectionMetadata": {"id": "1"},
    }
    wrong_client = await invoke(local_stack, outputs["TokenAuthorizerFunctionArn"], connect)
    assert wrong_client["isAuthenticated"] is False
    connect["protocolData"]["mqtt"]["clientId"] = token["clientId"]
    allowed = await invoke(local_stack, outputs["TokenAuthorizerFunctionArn"], connect)
    assert allowed["isAuthenticated"] is True
    assert f"client/{token['clientId']}" in allowed["policyDocuments"][0]


# ---------------------------------------------------------------- the live broker


async def signing_key(stack: LocalStack) -> bytes:
    async with stack.aws().client("secretsmanager") as secrets:
        value = await secrets.get_secret_value(SecretId=stack.outputs["SigningSecretArn"])
    return str(value["SecretString"]).encode()


def forge(issued: IotToken, key: bytes, **changes: Any) -> IotToken:
    """``issued`` re-signed with ``key`` after ``changes`` to its claims."""
    now = int(time.time())
    claims = tokens.Claims(
        scope=changes.get("scope", tokens.DAEMON),
        subtopic=changes.get("subtopic", issued.topic_filters[0].split("/")[1]),
        client_id=changes.get("client_id", issued.client_id),
        issued_at=changes.get("issued_at", now),
        expires_at=changes.get("expires_at", now + 600),
    )
    return dataclasses.replace(issued, token=tokens.sign(claims, key))


def tampered(issued: IotToken, **claims: Any) -> IotToken:
    prefix, body, signature = issued.token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    decoded.update(claims)
    encoded = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return dataclasses.replace(issued, token=f"{prefix}.{encoded}.{signature}")


async def try_connect(
    stack: LocalStack, token: IotToken | None, client_id: str = "", transport: str = "tls"
) -> Any:
    """The connected connection (over TLS, or plain ``tcp``), or None when the broker
    refused it."""
    if transport == "tls":
        connection = tls_connection(stack, token, client_id)
    else:
        connection = mqtt_connection(stack.settings.host, stack.broker.port, token, client_id)
    try:
        await asyncio.wait_for(asyncio.wrap_future(connection.connect()), 30)
    except AwsCrtError:  # the broker closed the connection
        return None
    return connection


async def subscribe(connection: Any, topic_filter: str, queue: asyncio.Queue[Any]) -> bool:
    loop = asyncio.get_running_loop()

    def on_message(topic: str, payload: bytes, **kwargs: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (topic, json.loads(payload)))

    future, _ = connection.subscribe(topic_filter, mqtt.QoS.AT_LEAST_ONCE, callback=on_message)
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(future), 30)
    except mqtt.SubscribeError:  # awscrt's word for a SUBACK failure
        return False
    return result["qos"] is not None


@pytest.mark.parametrize("transport", ["tls", "tcp"])
async def test_the_broker_refuses_what_the_authorizer_refuses(
    local_stack: LocalStack, transport: str
) -> None:
    issued = await token_for(local_stack, new_id("live"))
    key = await signing_key(local_stack)
    now = int(time.time())
    leeway = tokens.LEEWAY_SECONDS
    candidates = {
        "anonymous": (None, "anonymous-client"),
        "forged signature": (forge(issued, b"not the key" * 6), ""),
        "expired": (forge(issued, key, issued_at=now - 7200, expires_at=now - leeway - 60), ""),
        "tampered claims": (tampered(issued, sub="someone-else"), ""),
        "wrong client id": (dataclasses.replace(issued, client_id=f"x{issued.client_id}"), ""),
        "reserved subtopic": (forge(issued, key, subtopic="status"), ""),
        "out of scope": (forge(issued, key, scope="admin"), ""),
        "dashboard with a subtopic": (forge(issued, key, scope=tokens.DASHBOARD), ""),
    }
    refused = {
        name: await try_connect(local_stack, token, client_id, transport)
        for name, (token, client_id) in candidates.items()
    }
    assert refused == dict.fromkeys(refused)
    connection = await try_connect(local_stack, issued, transport=transport)
    assert connection is not None  # the genuine token, after all that
    await asyncio.wrap_future(connection.disconnect())


async def test_the_tls_listener_speaks_alpn_mqtt_with_the_stacks_certificate(
    local_stack: LocalStack,
) -> None:
    context = ssl.create_default_context(cafile=str(local_stack.ca_file))
    context.set_alpn_protocols(["mqtt"])
    for name in ("127.0.0.1", "localhost"):  # the certificate is valid for both
        _, writer = await asyncio.open_connection(
            "127.0.0.1", local_stack.broker.tls_port, ssl=context, server_hostname=name
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "mqtt"
        writer.close()
        await writer.wait_closed()
    untrusted = ssl.create_default_context()  # the system's CAs: not the stack's
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", local_stack.broker.tls_port, ssl=untrusted)


async def test_a_token_sees_nothing_outside_its_filters(local_stack: LocalStack) -> None:
    mine, other = new_id("mine"), new_id("other")
    issued = await token_for(local_stack, mine)
    connection = await try_connect(local_stack, issued)
    received: asyncio.Queue[Any] = asyncio.Queue()
    root = local_stack.settings.topic_root
    for outside in (f"{root}/#", f"{root}/{other}/#", f"{root}/+/x", "#", f"{root}/status/#"):
        assert not await subscribe(connection, outside, received), outside
    assert await subscribe(connection, f"{root}/{mine}/#", received)

    async with local_stack.aws().client("iot-data") as iot:
        await iot.publish(topic=f"{root}/{other}/t1", qos=1, payload=b'{"n": 1}')
        await iot.publish(topic=f"{root}/{mine}/t2", qos=1, payload=b'{"n": 2}')
    # Deliveries keep the order of the publishes: the first would have come first.
    assert await asyncio.wait_for(received.get(), 30) == (f"{root}/{mine}/t2", {"n": 2})
    await asyncio.wrap_future(connection.disconnect())


async def test_a_dashboard_token_reads_status_topics_and_cannot_publish(
    local_stack: LocalStack,
) -> None:
    root = local_stack.settings.topic_root
    dashboard = await try_connect(local_stack, await token_for(local_stack, None))
    status: asyncio.Queue[Any] = asyncio.Queue()
    assert await subscribe(dashboard, f"{root}/status/#", status)
    assert not await subscribe(dashboard, f"{root}/{new_id('x')}/#", status)

    daemon_subtopic = new_id("victim")
    daemon = await try_connect(local_stack, await token_for(local_stack, daemon_subtopic))
    completions: asyncio.Queue[Any] = asyncio.Queue()
    assert await subscribe(daemon, f"{root}/{daemon_subtopic}/#", completions)

    for topic in (f"{root}/status/forged", f"{root}/{daemon_subtopic}/forged"):
        future, _ = dashboard.publish(topic, b'{"forged": true}', mqtt.QoS.AT_LEAST_ONCE)
        await asyncio.wrap_future(future)  # acknowledged, and dropped
    async with local_stack.aws().client("iot-data") as iot:
        for topic in (f"{root}/status/real", f"{root}/{daemon_subtopic}/real"):
            await iot.publish(topic=topic, qos=1, payload=b'{"real": true}')
    assert await asyncio.wait_for(status.get(), 30) == (f"{root}/status/real", {"real": True})
    assert await asyncio.wait_for(completions.get(), 30) == (
        f"{root}/{daemon_subtopic}/real",
        {"real": True},
    )
    for connection in (dashboard, daemon):
        await asyncio.wrap_future(connection.disconnect())


async def test_the_token_api_wants_sigv4_with_the_local_credentials(
    local_stack: LocalStack,
) -> None:
    url = f"{local_stack.issuer_url}/tokens/daemon/{new_id('sig')}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url) as unsigned:
            assert unsigned.status == 403
            assert (await unsigned.json())["message"] == "Missing Authentication Token"
    settings = IotAuthSettings(issuer_url=local_stack.issuer_url)
    wrong_secret = dataclasses.replace(local_stack.aws_settings, secret_access_key="guess")
    with pytest.raises(TokenError, match="403: The request signature we calculated"):
        await TokenIssuer(settings, wrong_secret).daemon_token("x")
    wrong_key = dataclasses.replace(local_stack.aws_settings, access_key_id="AKIDOTHER")
    with pytest.raises(TokenError, match="403: The security token"):
        await TokenIssuer(settings, wrong_key).daemon_token("x")
    wrong_region = dataclasses.replace(local_stack.aws_settings, region="eu-west-1")
    with pytest.raises(TokenError, match="403: Credential should be scoped"):
        await TokenIssuer(settings, wrong_region).daemon_token("x")
    signed = issuer_of(local_stack)  # botocore's SigV4Auth, as against API Gateway
    assert (await signed.daemon_token("x")).topic_filters == ("notifier/x/#",)
    with pytest.raises(TokenError, match="400"):
        await signed.daemon_token("status")


async def test_the_token_api_s_credentials_from_the_environment_are_looked_for_once(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws = local_stack.aws_settings
    for name, value in {
        "AWS_ACCESS_KEY_ID": aws.access_key_id,
        "AWS_SECRET_ACCESS_KEY": aws.secret_access_key,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, str(value))
    sessions = []

    class CountedSession(botocore.session.Session):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            sessions.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(botocore.session, "Session", CountedSession)
    unconfigured = dataclasses.replace(aws, access_key_id=None, secret_access_key=None)
    issuer = TokenIssuer(IotAuthSettings(issuer_url=local_stack.issuer_url), unconfigured)
    for subtopic in ("x", "y"):
        assert (await issuer.daemon_token(subtopic)).topic_filters == (f"notifier/{subtopic}/#",)
    assert len(sessions) == 1


async def test_notifier_token_prints_usable_credentials(local_stack: LocalStack) -> None:
    subtopic = new_id("cli")
    printed = await notifier_token(local_stack, "--subtopic", subtopic)
    assert {"username", "password", "clientId", "topicFilters", "expiresAt"} <= set(printed)
    root = local_stack.settings.topic_root
    assert printed["topicFilters"] == [f"{root}/{subtopic}/#"]
    assert printed["caFile"] == str(local_stack.ca_file) and printed["alpn"] == "mqtt"
    assert printed["port"] == local_stack.broker.tls_port

    options = io.TlsContextOptions()
    options.override_default_trust_store_from_path(None, printed["caFile"])
    options.alpn_list = [printed["alpn"]]
    connection = mqtt.Connection(
        client=mqtt.Client(
            io.ClientBootstrap.get_or_create_static_default(), io.ClientTlsContext(options)
        ),
        host_name=printed["endpoint"],
        port=printed["port"],
        client_id=printed["clientId"],
        username=printed["username"],
        password=printed["password"],
        disable_metrics=True,
    )
    await asyncio.wrap_future(connection.connect())
    assert await subscribe(connection, printed["topicFilters"][0], asyncio.Queue())
    await asyncio.wrap_future(connection.disconnect())
