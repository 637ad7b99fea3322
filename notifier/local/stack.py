"""`notifier local`: the whole AWS side of notifier on loopback, with no AWS account.

Starts the MQTT broker, then the AWS API endpoint process (moto plus bridges), then deploys
``statemachines/template.yaml`` into it with the same CloudFormation calls used for AWS, and
finally serves the deployed token issuer on loopback behind SigV4, as API Gateway does. From
then on the broker authenticates clients with the deployed custom authorizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
from botocore.credentials import Credentials

from notifier.aws.clients import AwsClients
from notifier.config import AwsSettings
from notifier.lifecycle import NotReadyError, Service, terminate, wait_ready
from notifier.local.broker import LocalBroker
from notifier.local.broker_auth import (
    AccessControl,
    LambdaAuthorizers,
    RegisteredCertificates,
)
from notifier.local.broker_quotas import ConnectionQuotas
from notifier.local.certificates import LocalCertificateAuthority
from notifier.local.endpoint import PUBLISHER_PASSWORD_ENV
from notifier.local.endpoint_quotas import QUOTAS_PATH
from notifier.local.ports import PortInUseError
from notifier.local.quotas import QuotaSettings
from notifier.local.settings import LOCAL_CREDENTIAL, LocalStackSettings
from notifier.local.sigv4 import SigV4Verifier, signed_headers
from notifier.local.throttling import EVENT_KINDS, QuotaEvents
from notifier.local.token_api import LocalTokenApi
from notifier.ops.deploy import deploy_stack

ENDPOINT_START_TIMEOUT = 120.0
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"
LOCAL_ACCESS_KEY_ID = LOCAL_SECRET_ACCESS_KEY = LOCAL_CREDENTIAL
"""The credentials the AWS endpoint and the token API want requests signed with
(local.toml's [aws])."""


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
        quotas: QuotaSettings,
    ) -> None:
        self.host = host
        self.port = port
        self._publisher_password = publisher_password
        self._args = [
            "--host", host, "--port", str(port),
            "--mqtt-host", mqtt_host, "--mqtt-port", str(mqtt_port),
            "--log-level", log_level, "--quotas", quotas.to_json(),
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

    async def quota_events(self) -> dict[str, int]:
        """The endpoint's quota event counts (Step Functions' throttling, refused publishes)."""
        url = f"{self.url}{QUOTAS_PATH}"
        credentials = Credentials(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY)
        headers = signed_headers("GET", url, credentials, LOCAL_REGION, "notifier")
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers=headers) as response,
        ):
            response.raise_for_status()
            events: dict[str, int] = (await response.json())["events"]
            return events


class LocalStack(Service):
    """Async context manager running broker, AWS endpoint and the deployed stack."""

    def __init__(self, settings: LocalStackSettings | None = None) -> None:
        self.settings = settings or LocalStackSettings()
        self._publisher_password = secrets.token_urlsafe(32)
        self.access = AccessControl(
            f"arn:aws:iot:{LOCAL_REGION}:{LOCAL_ACCOUNT}:", self._publisher_password
        )
        s = self.settings
        self.broker_quota_events = QuotaEvents()
        """Quota events of the broker (IoT Core's per-connection limits)."""
        self.connection_quotas = ConnectionQuotas(s.quotas, self.broker_quota_events)
        self.broker = LocalBroker(
            s.host,
            s.mqtt_port,
            self.access,
            tls_port=s.mqtt_tls_port,
            wss_port=s.mqtt_wss_port,
            quotas=self.connection_quotas,
        )
        self.work_dir = s.work_dir
        self._temporary_work_dir: Path | None = None
        self.certificates: LocalCertificateAuthority | None = None
        self.endpoint: AwsEndpointProcess | None = None
        self.token_api: LocalTokenApi | None = None
        self._authorizers: LambdaAuthorizers | None = None
        self._certificates: RegisteredCertificates | None = None
        self.outputs: dict[str, str] = {}
        self._aws: AwsClients | None = None

    @property
    def ca_file(self) -> Path:
        """The CA of the broker's TLS certificate, to point MQTT clients at."""
        assert self.certificates is not None, "the stack is not running"
        return self.certificates.ca_file

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
            access_key_id=LOCAL_ACCESS_KEY_ID,
            secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        )

    def aws(self) -> AwsClients:
        """Clients of the AWS endpoint, all from one session: each service's model is loaded
        once, where a session per call costs a tenth of a second of CPU or more."""
        if self._aws is None:
            self._aws = AwsClients(self.aws_settings)
        return self._aws

    async def quota_events(self) -> dict[str, int]:
        """Every quota event so far, by kind (``throttling.EVENT_KINDS``, 0 when none): the
        broker's and the AWS endpoint's."""
        assert self.endpoint is not None, "the stack is not running"
        endpoint = await self.endpoint.quota_events()
        broker = self.broker_quota_events.counts()
        return {kind: broker.get(kind, 0) + endpoint.get(kind, 0) for kind in EVENT_KINDS}

    async def start(self) -> None:
        s = self.settings
        self._prepare_tls()
        try:
            await self.broker.start()
        except BaseException:
            self._remove_temporary_work_dir()
            raise
        try:
            self.endpoint = AwsEndpointProcess(
                s.host,
                s.aws_port,
                s.host,
                self.broker.port,
                s.log_level,
                self._publisher_password,
                s.quotas,
            )
            await self.endpoint.start()
            self._authorizers = LambdaAuthorizers(self.aws())
            await self._authorizers.start()
            self.access.authorize = self._authorizers
            self._certificates = RegisteredCertificates(self.aws())
            await self._certificates.start()
            self.access.certificate_policies = self._certificates
            parameters = {
                "Stage": s.stage,
                "TopicRoot": s.topic_root,
                "MqttEndpoint": f"{s.host}:{self.broker.tls_port}",
                **s.parameters,
            }
            self.outputs = await deploy_stack(
                self.aws(), s.stack_name, parameters, artifacts_bucket=f"{s.stack_name}-artifacts"
            )
            self.token_api = LocalTokenApi(
                s.host,
                s.issuer_port,
                SigV4Verifier(LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LOCAL_REGION),
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
        if self._certificates is not None:
            self.access.certificate_policies = None
            await self._certificates.stop()
        if self.endpoint is not None:
            await self.endpoint.stop()
        self._aws = None
        with contextlib.suppress(Exception):
            await self.broker.stop()
        self._remove_temporary_work_dir()

    def _prepare_tls(self) -> None:
        """The stack's CA (kept in its working directory) and a new server certificate for
        the broker, valid for the names it is reached by on loopback."""
        if self.work_dir is None:
            self.work_dir = self._temporary_work_dir = Path(
                tempfile.mkdtemp(prefix=f"{self.settings.stack_name}-")
            )
        self.certificates = LocalCertificateAuthority(
            self.work_dir, f"{self.settings.stack_name} local CA"
        )
        self.certificates.ensure()
        hosts = [self.settings.host, "localhost", "127.0.0.1", "::1"]
        self.broker.tls = self.certificates.server_certificate(hosts)
        self.broker.ca_file = str(self.certificates.ca_file)

    def _remove_temporary_work_dir(self) -> None:
        if self._temporary_work_dir is not None:
            shutil.rmtree(self._temporary_work_dir, ignore_errors=True)
            self.work_dir = self._temporary_work_dir = None
