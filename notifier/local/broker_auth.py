"""Stands in for AWS IoT Core's custom authentication on the local broker (amqtt).

On CONNECT the broker does what IoT Core does: it takes the authorizer name from the MQTT
username (``?x-amz-customauthorizer-name=<name>``), calls that authorizer with IoT's event
(the password base64-encoded), and keeps the returned policy for the connection. SUBSCRIBE,
PUBLISH and every delivery (RECEIVE) are then checked against it. A client that presents a
device certificate instead (on the TLS listener, signed by the stack's CA) is known as IoT
Core knows it: the certificate must be registered with IoT (``RegisterCertificateWithoutCA``)
and ACTIVE, and the policies attached to it are its policy. Other clients are refused. The
one other identity is the endpoint's IoT data plane (``iot_core``), which
publishes the workflows' completions with a secret of the running stack, as IoT Core's own
data plane publishes for IAM-authorised callers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from notifier.aws.clients import AwsClients
from notifier.lifecycle import Service
from notifier.local.iot_policy import IotPolicy, Statement
from notifier.local.settings import PUBLISHER_CLIENT_ID

if TYPE_CHECKING:
    from types_aiobotocore_iot import IoTClient
    from types_aiobotocore_lambda import LambdaClient

log = logging.getLogger("notifier.local.broker")

AUTHORIZER_PARAMETER = "x-amz-customauthorizer-name"
AUTHORIZER_CACHE_SECONDS = 60.0

Authorize = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""``authorize(authorizer_name, event)``: the custom authorizer's answer to ``event``."""
CertificatePolicies = Callable[[bytes], Awaitable[list[str]]]
"""``certificate_policies(der)``: the policy documents attached to that registered, active
device certificate; :class:`Refused` for one IoT does not accept."""


@dataclass(frozen=True)
class Grant:
    policy: IotPolicy
    principal: str
    expires_at: float
    """Monotonic time after which the connection is allowed nothing more."""


class AccessControl:
    """Decides CONNECTs by the authorizer, then every topic action by the policy it gave."""

    def __init__(self, arn_prefix: str, publisher_password: str | None = None) -> None:
        self.arn_prefix = arn_prefix
        self.publisher_password = publisher_password
        self.authorize: Authorize | None = None
        self.certificate_policies: CertificatePolicies | None = None
        self.on_publish: Callable[[str], None] | None = None
        """Told the topic of every PUBLISH the broker accepts, as it arrives."""
        self._grants: dict[str, Grant] = {}

    async def connect(
        self,
        client_id: str,
        username: str | None,
        password: str | None,
        certificate: bytes | None = None,
    ) -> bool:
        """Whether ``client_id`` may connect with these credentials, or with ``certificate``
        (DER), the device certificate it presented."""
        try:
            grant = await self._decide(client_id, username, password, certificate)
        except Refused as refused:
            self._grants.pop(client_id, None)
            log.info("MQTT CONNECT refused for client %r: %s", client_id, refused)
            return False
        self._grants[client_id] = grant
        log.debug("MQTT CONNECT of %r accepted for principal %s", client_id, grant.principal)
        return True

    def allows(self, client_id: str | None, action: Action, topic: str) -> bool:
        grant = self._grants.get(client_id or "")
        if grant is None or time.monotonic() >= grant.expires_at:
            return False
        if action == Action.SUBSCRIBE:
            iot_action, resource = "iot:Subscribe", f"topicfilter/{topic}"
        elif action == Action.PUBLISH:
            iot_action, resource = "iot:Publish", f"topic/{topic}"
        else:
            iot_action, resource = "iot:Receive", f"topic/{topic}"
        allowed = grant.policy.allows(iot_action, self.arn_prefix + resource)
        if not allowed and action != Action.RECEIVE:
            log.info("MQTT %s to %r refused for client %r", action, topic, client_id)
        elif allowed and action == Action.PUBLISH and self.on_publish is not None:
            self.on_publish(topic)
        return allowed

    async def _decide(
        self, client_id: str, username: str | None, password: str | None, certificate: bytes | None
    ) -> Grant:
        if client_id == PUBLISHER_CLIENT_ID or username == PUBLISHER_CLIENT_ID:
            return self._publisher(client_id, username, password)
        if certificate is not None and authorizer_name(username or "") is None:
            return await self._certificate(client_id, certificate)
        if not username or not password:
            raise Refused("no token (anonymous clients are not allowed)")
        name = authorizer_name(username)
        if name is None:
            raise Refused(f"no {AUTHORIZER_PARAMETER} in the username")
        if self.authorize is None:
            raise Refused("no custom authorizer is deployed yet")
        event = {
            "signatureVerified": False,
            "protocols": ["mqtt"],
            "protocolData": {
                "mqtt": {
                    "username": username,
                    "password": base64.b64encode(password.encode()).decode(),
                    "clientId": client_id,
                }
            },
            "connectionMetadata": {"id": uuid.uuid4().hex},
        }
        try:
            answer = await self.authorize(name, event)
        except Exception as exc:
            raise Refused(f"authorizer {name!r} failed: {exc}") from None
        return self._grant(client_id, answer)

    async def _certificate(self, client_id: str, certificate: bytes) -> Grant:
        if self.certificate_policies is None:
            raise Refused("no certificate registry yet")
        try:
            documents = await self.certificate_policies(certificate)
            policy = IotPolicy.from_documents(documents)
        except Refused:
            raise
        except Exception as exc:
            raise Refused(f"the certificate's policies could not be read: {exc}") from None
        if not policy.allows("iot:Connect", f"{self.arn_prefix}client/{client_id}"):
            raise Refused("the certificate's policies do not allow connecting with this client id")
        return Grant(policy, f"certificate {certificate_id(certificate)}", float("inf"))

    def _grant(self, client_id: str, answer: Any) -> Grant:
        if not isinstance(answer, dict) or answer.get("isAuthenticated") is not True:
            raise Refused("the authorizer denied the token")
        try:
            policy = IotPolicy.from_documents(answer["policyDocuments"])
            seconds = int(answer["disconnectAfterInSeconds"])
            principal = str(answer["principalId"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Refused(f"malformed authorizer answer: {exc}") from None
        if not policy.allows("iot:Connect", f"{self.arn_prefix}client/{client_id}"):
            raise Refused("the policy does not allow connecting with this client id")
        return Grant(policy, principal, time.monotonic() + seconds)

    def _publisher(self, client_id: str, username: str | None, password: str | None) -> Grant:
        expected = self.publisher_password
        valid = (
            expected is not None
            and client_id == PUBLISHER_CLIENT_ID
            and username == PUBLISHER_CLIENT_ID
            and hmac.compare_digest((password or "").encode(), expected.encode())
        )
        if not valid:
            raise Refused("bad IoT data plane credentials")
        policy = IotPolicy(
            [
                Statement(True, ("iot:Connect",), (f"{self.arn_prefix}client/{client_id}",)),
                Statement(True, ("iot:Publish",), (f"{self.arn_prefix}topic/*",)),
            ]
        )
        return Grant(policy, "iotdataplane", float("inf"))


class Refused(Exception):
    pass


def certificate_id(der: bytes) -> str:
    """IoT's id of a certificate: the SHA-256 of its DER encoding, in hex."""
    return hashlib.sha256(der).hexdigest()


def authorizer_name(username: str) -> str | None:
    _, _, query = username.partition("?")
    names = parse_qs(query).get(AUTHORIZER_PARAMETER)
    return names[0] if names else None


class IotAuthPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """The amqtt plugin; :class:`LocalBroker` hands it its :class:`AccessControl`."""

    access: AccessControl | None = None

    async def authenticate(self, *, session: Session) -> bool:
        if self.access is None or session.client_id is None:
            return False
        tls = session.ssl_object
        certificate = tls.getpeercert(binary_form=True) if tls is not None else None
        return await self.access.connect(
            session.client_id, session.username, session.password, certificate
        )

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        if self.access is None or session is None or topic is None or action is None:
            return False
        return self.access.allows(session.client_id, action, topic)


class LambdaAuthorizers(Service):
    """:data:`Authorize` through the AWS API, as IoT Core does it: the authorizer's record
    (DescribeAuthorizer) names its Lambda function, which is invoked with the event."""

    def __init__(self, aws: AwsClients) -> None:
        self._aws = aws
        self._exit = AsyncExitStack()
        self._iot: IoTClient  # from start on
        self._lambda: LambdaClient
        self._functions: dict[str, tuple[str, float]] = {}

    async def start(self) -> None:
        self._iot = await self._exit.enter_async_context(self._aws.client("iot"))
        self._lambda = await self._exit.enter_async_context(self._aws.client("lambda"))

    async def stop(self) -> None:
        await self._exit.aclose()

    async def __call__(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        function = await self._function(name)
        response = await self._lambda.invoke(FunctionName=function, Payload=json.dumps(event))
        payload = json.loads(await response["Payload"].read())
        if response.get("FunctionError"):
            raise RuntimeError(payload.get("errorMessage", "the function failed"))
        return dict(payload)

    async def _function(self, name: str) -> str:
        cached = self._functions.get(name)
        if cached is not None and time.monotonic() - cached[1] < AUTHORIZER_CACHE_SECONDS:
            return cached[0]
        described = await self._iot.describe_authorizer(authorizerName=name)
        authorizer = described["authorizerDescription"]
        if authorizer.get("status") != "ACTIVE":
            raise RuntimeError(f"authorizer {name} is {authorizer.get('status')}")
        function = str(authorizer["authorizerFunctionArn"])
        self._functions[name] = (function, time.monotonic())
        return function


class RegisteredCertificates(Service):
    """:data:`CertificatePolicies` through the AWS API, as IoT Core does it: the certificate's
    record (DescribeCertificate, by its id) must be ACTIVE, and its attached policies
    (ListAttachedPolicies, GetPolicy) are what it may do."""

    def __init__(self, aws: AwsClients) -> None:
        self._aws = aws
        self._exit = AsyncExitStack()
        self._iot: IoTClient  # from start on

    async def start(self) -> None:
        self._iot = await self._exit.enter_async_context(self._aws.client("iot"))

    async def stop(self) -> None:
        await self._exit.aclose()

    async def __call__(self, certificate: bytes) -> list[str]:
        identifier = certificate_id(certificate)
        try:
            described = await self._iot.describe_certificate(certificateId=identifier)
        except self._iot.exceptions.ResourceNotFoundException:
            raise Refused(f"certificate {identifier} is not registered") from None
        description = described["certificateDescription"]
        if description.get("status") != "ACTIVE":
            raise Refused(f"certificate {identifier} is {description.get('status')}")
        attached = await self._iot.list_attached_policies(target=description["certificateArn"])
        documents = []
        for policy in attached.get("policies", []):
            document = await self._iot.get_policy(policyName=policy["policyName"])
            documents.append(str(document["policyDocument"]))
        if not documents:
            raise Refused(f"certificate {identifier} has no policy attached")
        return documents
