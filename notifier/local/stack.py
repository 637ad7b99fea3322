"""`notifier local`: the whole AWS side of notifier on loopback, with no AWS account.

Starts the MQTT broker, then the AWS API endpoint process (moto plus bridges), then deploys
``statemachines/template.yaml`` into it with the same CloudFormation calls used for AWS, and
finally serves the deployed token issuer on loopback behind an API key. From then on the
broker authenticates clients with the deployed custom authorizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from dataclasses import dataclass, field

from notifier.aws import AwsClients, AwsSettings
from notifier.deploy import deploy_stack
from notifier.lifecycle import Service, terminate
from notifier.local.broker import LocalBroker, PortInUseError
from notifier.local.broker_auth import AccessControl, LambdaAuthorizers
from notifier.local.endpoint import PUBLISHER_PASSWORD_ENV
from notifier.local.token_api import LocalTokenApi

ENDPOINT_START_TIMEOUT = 120.0
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"


@dataclass
class LocalStackSettings:
    host: str = "127.0.0.1"
    aws_port: int = 4566
    mqtt_port: int = 1883
    issuer_port: int = 4567
    issuer_api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    """The key the local token issuer wants in ``x-api-key``; random unless given."""
    stack_name: str = "notifier-local"
    stage: str = "local"
    topic_root: str = "notifier"
    log_level: str = "WARNING"
    parameters: dict[str, str] = field(default_factory=dict)


class LocalStackError(Exception):
    pass


class AwsEndpointProcess:
    """The ``notifier.local.endpoint`` child process."""

    def __init__(
        self,
        host: str,
        port: int,
        mqtt_host: str,
        mqtt_port: int,
        log_level: str,
        publisher_password: str,
    ) -> None:
        self.host = host
        self.port = port
        self._publisher_password = publisher_password
        self._args = [
            "--host", host, "--port", str(port),
            "--mqtt-host", mqtt_host, "--mqtt-port", str(mqtt_port),
            "--log-level", log_level,
        ]  # fmt: skip
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "the AWS endpoint process is not running"
        return self._process.pid

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier.local.endpoint",
            *self._args,
            stdout=asyncio.subprocess.PIPE,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                PUBLISHER_PASSWORD_ENV: self._publisher_password,
            },
        )
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), ENDPOINT_START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise LocalStackError("the AWS endpoint did not start in time") from None
        words = line.decode().split()
        if words[:1] != ["READY"]:
            await self._process.wait()
            if words[:1] == ["ERROR"] and "in use" in line.decode():
                raise PortInUseError("AWS endpoint", self.host, self.port, "--aws-port")
            raise LocalStackError(f"the AWS endpoint failed to start: {line.decode().strip()}")
        self.port = int(words[2])

    async def stop(self) -> None:
        await terminate(self._process, 15)


class LocalStack(Service):
    """Async context manager running broker, AWS endpoint and the deployed stack."""

    def __init__(self, settings: LocalStackSettings | None = None) -> None:
        self.settings = settings or LocalStackSettings()
        self._publisher_password = secrets.token_urlsafe(32)
        self.access = AccessControl(
            f"arn:aws:iot:{LOCAL_REGION}:{LOCAL_ACCOUNT}:", self._publisher_password
        )
        self.broker = LocalBroker(self.settings.host, self.settings.mqtt_port, self.access)
        self.endpoint: AwsEndpointProcess | None = None
        self.token_api: LocalTokenApi | None = None
        self._authorizers: LambdaAuthorizers | None = None
        self.outputs: dict[str, str] = {}

    @property
    def issuer_url(self) -> str:
        assert self.token_api is not None
        return self.token_api.url

    @property
    def aws_settings(self) -> AwsSettings:
        assert self.endpoint is not None
        return AwsSettings(
            region=LOCAL_REGION,
            endpoint_url=self.endpoint.url,
            access_key_id="local",
            secret_access_key="local",
        )

    def aws(self) -> AwsClients:
        return AwsClients(self.aws_settings)

    async def start(self) -> None:
        s = self.settings
        await self.broker.start()
        try:
            self.endpoint = AwsEndpointProcess(
                s.host, s.aws_port, s.host, self.broker.port, s.log_level, self._publisher_password
            )
            await self.endpoint.start()
            self._authorizers = LambdaAuthorizers(self.aws())
            await self._authorizers.start()
            self.access.authorize = self._authorizers
            parameters = {
                "Stage": s.stage,
                "TopicRoot": s.topic_root,
                "MqttEndpoint": f"{s.host}:{self.broker.port}",
                **s.parameters,
            }
            self.outputs = await deploy_stack(
                self.aws(), s.stack_name, parameters, artifacts_bucket=f"{s.stack_name}-artifacts"
            )
            self.token_api = LocalTokenApi(
                s.host,
                s.issuer_port,
                s.issuer_api_key,
                self.aws(),
                self.outputs["TokenIssuerFunctionArn"],
                s.stage,
            )
            await self.token_api.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.token_api is not None:
            await self.token_api.stop()
        if self._authorizers is not None:
            self.access.authorize = None
            await self._authorizers.stop()
        if self.endpoint is not None:
            await self.endpoint.stop()
        with contextlib.suppress(Exception):
            await self.broker.stop()
