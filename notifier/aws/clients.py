"""aiobotocore clients, configured once from where the AWS API lives, and the types of the
operations the daemon passes around apart from their clients.

A client is typed by its service's stubs (``types-aiobotocore-<service>``, development
dependencies at aiobotocore's version): they are imported for type checking only, so the
daemon runs without them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, Unpack, overload

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError

from notifier.aws.fast_calls import FastCall
from notifier.config import AwsSettings

if TYPE_CHECKING:
    from aiobotocore.client import AioBaseClient
    from types_aiobotocore_cloudformation import CloudFormationClient
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_iot import IoTClient
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import PutObjectRequestTypeDef
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_stepfunctions import SFNClient
    from types_aiobotocore_stepfunctions.type_defs import (
        StartExecutionInputTypeDef,
        StartSyncExecutionInputTypeDef,
        StartSyncExecutionOutputTypeDef,
    )
    from types_aiobotocore_sts import STSClient

FastCallType = TypeVar("FastCallType", bound=FastCall)
Service = Literal[
    "cloudformation", "dynamodb", "iot", "lambda", "s3", "sns", "sqs", "stepfunctions", "sts"
]
"""Every AWS service the daemon calls: :meth:`AwsClients.client` gives each its typed
client."""
SYNC_READ_TIMEOUT = 330.0
"""Seconds a StartSyncExecution answer may take: an Express workflow runs at most five
minutes, and then some."""


UNRETRIED: frozenset[Service] = frozenset({"stepfunctions"})
"""Services whose calls the AWS SDK makes once: the daemon retries them itself, within the
wait of the request they serve and its share of the account's quotas
(:mod:`notifier.aws.read_budget`), rather than the SDK's backoff hiding throttling from it."""


class AwsClients:
    """Creates aiobotocore clients that share one session and one configuration.

    ``on_call`` is told the name of every API operation the clients make (for metrics).
    """

    def __init__(self, settings: AwsSettings, on_call: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._on_call = on_call
        self._session: AioSession = get_session()
        if settings.profile:
            self._session.set_config_variable("profile", settings.profile)
        self._config = AioConfig(
            retries={"mode": "adaptive", "max_attempts": 8},
            max_pool_connections=200,
            # An endpoint of its own (the local stack's) has no per-operation host names,
            # such as StartSyncExecution's sync-states.
            inject_host_prefix=settings.endpoint_url is None,
        )
        self._sync_config = self._config.merge(
            AioConfig(
                read_timeout=SYNC_READ_TIMEOUT, retries={"mode": "standard", "max_attempts": 1}
            )
        )
        self._unretried_config = self._config.merge(
            AioConfig(retries={"mode": "standard", "total_max_attempts": 1})
        )

    def _config_of(self, service: str, sync: bool) -> AioConfig:
        if sync:
            return self._sync_config
        return self._unretried_config if service in UNRETRIED else self._config

    @overload
    def client(
        self, service: Literal["stepfunctions"], *, sync: bool = False
    ) -> AbstractAsyncContextManager[SFNClient]: ...
    @overload
    def client(self, service: Literal["s3"]) -> AbstractAsyncContextManager[S3Client]: ...
    @overload
    def client(self, service: Literal["sqs"]) -> AbstractAsyncContextManager[SQSClient]: ...
    @overload
    def client(self, service: Literal["sns"]) -> AbstractAsyncContextManager[SNSClient]: ...
    @overload
    def client(
        self, service: Literal["dynamodb"]
    ) -> AbstractAsyncContextManager[DynamoDBClient]: ...
    @overload
    def client(self, service: Literal["iot"]) -> AbstractAsyncContextManager[IoTClient]: ...
    @overload
    def client(self, service: Literal["lambda"]) -> AbstractAsyncContextManager[LambdaClient]: ...
    @overload
    def client(self, service: Literal["sts"]) -> AbstractAsyncContextManager[STSClient]: ...
    @overload
    def client(
        self, service: Literal["cloudformation"]
    ) -> AbstractAsyncContextManager[CloudFormationClient]: ...

    def client(
        self, service: Service, *, sync: bool = False
    ) -> AbstractAsyncContextManager[AioBaseClient]:
        """A client of ``service``; with ``sync`` (Step Functions), for calls that last as
        long as what they run (StartSyncExecution): a long read timeout, and no retry, which
        would run it twice."""
        return self._client(service, sync)

    @asynccontextmanager
    async def _client(self, service: Service, sync: bool) -> AsyncIterator[AioBaseClient]:
        async with self._session.create_client(
            service,
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            aws_access_key_id=self.settings.access_key_id,
            aws_secret_access_key=self.settings.secret_access_key,
            config=self._config_of(service, sync),
        ) as client:
            if self._on_call is not None:
                on_call = self._on_call

                def count(model: Any, **kwargs: Any) -> None:
                    on_call(model.name)

                client.meta.events.register("before-call.*.*", count)
            yield client

    def fast(self, client: AioBaseClient, call: type[FastCallType]) -> FastCallType:
        """``call`` (a :class:`~notifier.aws.fast_calls.FastCall`) of ``client``, counted like
        the client's own calls."""
        return call(client, self._on_call)


class PutObjectCall(Protocol):
    """S3 PutObject: the client's method, or the fast path's
    (:class:`~notifier.aws.fast_operations.PutObject`)."""

    async def __call__(
        self, **params: Unpack[PutObjectRequestTypeDef]
    ) -> Mapping[str, object]: ...


class StartExecutionCall(Protocol):
    """Step Functions StartExecution: the client's method, or the fast path's
    (:class:`~notifier.aws.fast_operations.StartExecution`)."""

    async def __call__(
        self, **params: Unpack[StartExecutionInputTypeDef]
    ) -> Mapping[str, object]: ...


class StartSyncExecutionCall(Protocol):
    """Step Functions StartSyncExecution: the method of a client made for it (see
    :meth:`AwsClients.client`)."""

    async def __call__(
        self, **params: Unpack[StartSyncExecutionInputTypeDef]
    ) -> StartSyncExecutionOutputTypeDef: ...


def span_attributes(call: PutObjectCall | StartExecutionCall) -> dict[str, str | int | bool]:
    """A span's attributes for ``call``: whether the fast path makes it (it may still hand
    one call to the AWS SDK after an error)."""
    return {"notifier.fast_path": bool(getattr(call, "enabled", False))}


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for any other exception)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""
