"""Client of the iotauth token issuer: MQTT credentials for the daemon and for `notifier token`.

Requests are signed with SigV4 (service ``execute-api``) using the [aws] credentials (else the
usual AWS environment), against the stack's API in AWS and the local stack's alike.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp

from notifier.config import AwsSettings, IotAuthSettings

if TYPE_CHECKING:
    from botocore.credentials import Credentials


class TokenError(Exception):
    """No token: the issuer is unreachable, refused the request, or answered nonsense."""


@dataclass(frozen=True)
class IotToken:
    token: str
    expires_at: datetime
    endpoint: str
    port: int
    authorizer_name: str
    client_id: str
    topic_filters: tuple[str, ...]

    @property
    def username(self) -> str:
        """The MQTT username AWS IoT expects for a custom authorizer with signing disabled."""
        return f"{self.client_id}?x-amz-customauthorizer-name={quote(self.authorizer_name)}"

    @property
    def password(self) -> str:
        return self.token

    @classmethod
    def from_answer(cls, answer: Any) -> IotToken:
        try:
            return cls(
                token=str(answer["token"]),
                expires_at=datetime.fromisoformat(answer["expiresAt"]),
                endpoint=str(answer["endpoint"]),
                port=int(answer["port"]),
                authorizer_name=str(answer["authorizerName"]),
                client_id=str(answer["clientId"]),
                topic_filters=tuple(str(f) for f in answer["topicFilters"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenError(f"the token issuer's answer lacks {exc}") from None

    def credentials(self) -> dict[str, Any]:
        """What any MQTT client needs (``mosquitto_sub -u <username> -P <password>
        -i <clientId> -t <a topic filter>``), and where to connect."""
        return {
            "username": self.username,
            "password": self.password,
            "clientId": self.client_id,
            "topicFilters": list(self.topic_filters),
            "expiresAt": self.expires_at.isoformat(),
            "endpoint": self.endpoint,
            "port": self.port,
            "authorizerName": self.authorizer_name,
        }


class TokenIssuer:
    def __init__(self, settings: IotAuthSettings, aws: AwsSettings, timeout: float = 30.0) -> None:
        if not settings.issuer_url:
            raise TokenError("no token issuer configured ([iotauth] issuer_url)")
        self.url = settings.issuer_url.rstrip("/")
        self.aws = aws
        self.timeout = timeout
        self._signing: tuple[Credentials, str] | None = None

    async def daemon_token(self, subtopic: str) -> IotToken:
        return await self._request(f"/tokens/daemon/{quote(subtopic, safe='')}")

    async def dashboard_token(self) -> IotToken:
        return await self._request("/tokens/dashboard")

    async def _request(self, path: str) -> IotToken:
        url = self.url + path
        headers = {"accept": "application/json"}
        headers.update(await asyncio.to_thread(self._sigv4_headers, url))
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                async with http.post(url, headers=headers, data=b"") as response:
                    text = await response.text()
                    status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenError(f"token issuer {self.url} unreachable: {exc or 'timed out'}") from None
        if status != 200:
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            raise TokenError(f"token issuer {self.url} answered {status}: {message}".strip())
        try:
            answer = json.loads(text)
        except ValueError:
            raise TokenError(f"token issuer {self.url} answered no JSON") from None
        return IotToken.from_answer(answer)

    def _sigv4_headers(self, url: str) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials, region = self._signing or self._find_signing(url)
        request = AWSRequest(method="POST", url=url, data=b"", headers={})
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())

    def _find_signing(self, url: str) -> tuple[Credentials, str]:
        """The credentials and region to sign with, found once: the configured keys and
        region, else the SDK's chain, which reads files and the environment and may ask
        instance metadata (credentials that expire renew themselves when signing asks)."""
        import botocore.session
        from botocore.credentials import Credentials

        aws = self.aws
        if aws.access_key_id and aws.secret_access_key and aws.region:
            self._signing = Credentials(aws.access_key_id, aws.secret_access_key), aws.region
            return self._signing
        session = botocore.session.Session(profile=aws.profile)
        if aws.access_key_id and aws.secret_access_key:
            session.set_credentials(aws.access_key_id, aws.secret_access_key)
        credentials = session.get_credentials()
        if credentials is None:
            raise TokenError("no AWS credentials to sign the token request with")
        region = aws.region or session.get_config_variable("region") or _region_of(url)
        self._signing = credentials, region
        return self._signing


def _region_of(url: str) -> str:
    """``<api>.execute-api.<region>.amazonaws.com`` -> region."""
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if len(parts) > 3 and parts[1] == "execute-api":
        return parts[2]
    raise TokenError(f"no AWS region configured and none in {url}")
