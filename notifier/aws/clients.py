"""aiobotocore clients, configured once from where the AWS API lives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError

from notifier.aws.fast_calls import FastCall
from notifier.config import AwsSettings

FastCallType = TypeVar("FastCallType", bound=FastCall)
SYNC_READ_TIMEOUT = 330.0
"""Seconds a StartSyncExecution answer may take: an Express workflow runs at most five
minutes, and then some."""


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

    @asynccontextmanager
    async def client(self, service: str, *, sync: bool = False) -> AsyncIterator[Any]:
        """A client of ``service``; with ``sync``, for calls that last as long as what they
        run (StartSyncExecution): a long read timeout, and no retry, which would run it
        twice."""
        async with self._session.create_client(
            service,
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            aws_access_key_id=self.settings.access_key_id,
            aws_secret_access_key=self.settings.secret_access_key,
            config=self._sync_config if sync else self._config,
        ) as client:
            if self._on_call is not None:
                on_call = self._on_call

                def count(model: Any, **kwargs: Any) -> None:
                    on_call(model.name)

                client.meta.events.register("before-call.*.*", count)
            yield client

    def fast(self, client: Any, call: type[FastCallType]) -> FastCallType:
        """``call`` (a :class:`~notifier.aws.fast_calls.FastCall`) of ``client``, counted like
        the client's own calls."""
        return call(client, self._on_call)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for any other exception)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""
