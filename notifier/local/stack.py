"""`notifier local`: the whole AWS side of notifier on loopback, with no AWS account.

Starts the MQTT broker, then the AWS API endpoint process (moto plus bridges), then deploys
``statemachines/template.yaml`` into it with the same CloudFormation calls used for AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field

from notifier.aws import AwsClients, AwsSettings
from notifier.deploy import deploy_stack
from notifier.lifecycle import Service
from notifier.local.broker import LocalBroker, PortInUseError

ENDPOINT_START_TIMEOUT = 120.0
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"


@dataclass
class LocalStackSettings:
    host: str = "127.0.0.1"
    aws_port: int = 4566
    mqtt_port: int = 1883
    stack_name: str = "notifier-local"
    stage: str = "local"
    topic_root: str = "notifier"
    log_level: str = "WARNING"
    parameters: dict[str, str] = field(default_factory=dict)


class LocalStackError(Exception):
    pass


class AwsEndpointProcess:
    """The ``notifier.local.endpoint`` child process."""

    def __init__(self, host: str, port: int, mqtt_host: str, mqtt_port: int, log_level: str):
        self.host = host
        self.port = port
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
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
        if self._process is None or self._process.returncode is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._process.wait(), 15)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


class LocalStack(Service):
    """Async context manager running broker, AWS endpoint and the deployed stack."""

    def __init__(self, settings: LocalStackSettings | None = None) -> None:
        self.settings = settings or LocalStackSettings()
        self.broker = LocalBroker(self.settings.host, self.settings.mqtt_port)
        self.endpoint: AwsEndpointProcess | None = None
        self.outputs: dict[str, str] = {}

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
                s.host, s.aws_port, s.host, self.broker.port, s.log_level
            )
            await self.endpoint.start()
            parameters = {
                "Stage": s.stage,
                "TopicRoot": s.topic_root,
                "MqttEndpoint": f"{s.host}:{self.broker.port}",
                **s.parameters,
            }
            self.outputs = await deploy_stack(
                self.aws(), s.stack_name, parameters, artifacts_bucket=f"{s.stack_name}-artifacts"
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()
        with contextlib.suppress(Exception):
            await self.broker.stop()
