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

from notifier.aws import AwsClients, AwsSettings
from notifier.deploy import deploy_stack
from notifier.lifecycle import NotReadyError, Service, terminate, wait_ready
from notifier.local.broker import LocalBroker, PortInUseError
from notifier.local.broker_auth import AccessControl, LambdaAuthorizers
from notifier.local.endpoint import PUBLISHER_PASSWORD_ENV
from notifier.local.settings import DUMMY_CREDENTIAL, LocalStackSettings
from notifier.local.token_api import LocalTokenApi

ENDPOINT_START_TIMEOUT = 120.0
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"


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
        try:
            _, port = await wait_ready(self._process, ENDPOINT_START_TIMEOUT)
        except NotReadyError as exc:
            await self.stop()
            if exc.line is None:
                raise LocalStackError("the AWS endpoint did not start in time") from None
            if exc.line.startswith("ERROR") and "in use" in exc.line:
                raise PortInUseError("AWS endpoint", self.host, self.port, "--aws-port") from None
            raise LocalStackError(f"the AWS endpoint failed to start: {exc.line}") from None
        self.port = int(port)

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
            access_key_id=DUMMY_CREDENTIAL,
            secret_access_key=DUMMY_CREDENTIAL,
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
