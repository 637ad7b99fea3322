"""One long-poll consumer of an SQS queue, shared by everything that reads one.

:class:`QueueConsumer` receives up to ten messages at a time, waiting up to ``wait_seconds``
for the first, and hands each batch to its ``handle``. It runs in a background task of its
own that no failure stops: SQS's or the handler's errors are reported in :attr:`error`
(logged once, and once more when it works again) and the next receive waits, backing off.
A queue it must first find or create (``prepare``) is prepared again after SQS says it is
gone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.clients import error_code
from notifier.lifecycle import BackgroundTasks, Health, Service

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

Message: TypeAlias = "MessageTypeDef"
"""A message as ReceiveMessage answers it."""
MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


class QueueConsumer(Service):
    def __init__(
        self,
        sqs: SQSClient,
        name: str,
        handle: Callable[[list[Message]], Awaitable[None]],
        *,
        queue_url: str | None = None,
        prepare: Callable[[], Awaitable[str]] | None = None,
        wait_seconds: int = 20,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
        health: Health | None = None,
        **receive_options: Any,
    ) -> None:
        """Either ``queue_url`` or ``prepare`` (which finds or creates the queue and returns
        its URL); ``receive_options`` go to every ReceiveMessage. ``health`` is reported to,
        and may be shared with the consumer's owner's other work."""
        assert (queue_url is None) != (prepare is None), "queue_url or prepare"
        self.sqs = sqs
        self.name = name
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self.health = health or Health(f"SQS {name}", log)
        self._handle = handle
        self._prepare = prepare
        self._receive_options = receive_options
        self._retry = (retry_min, retry_max)
        self._tasks = BackgroundTasks()

    @property
    def error(self) -> str | None:
        return self.health.error

    async def start(self) -> None:
        # Not awaited here: an unreachable SQS must not keep the daemon from serving.
        self._tasks.start(
            self.name,
            self._step,
            self._failed,
            expected=(ClientError, BotoCoreError),
            retry_min=self._retry[0],
            retry_max=self._retry[1],
        )

    async def stop(self) -> None:
        await self._tasks.stop()

    def once(self, name: str, work: Awaitable[None]) -> None:
        """Run ``work`` beside the receiving (e.g. deleting what a batch handled), in a task
        stopped with the consumer."""
        self._tasks.once(f"{self.name}-{name}", work)

    async def _step(self) -> None:
        if self.queue_url is None:
            assert self._prepare is not None
            self.queue_url = await self._prepare()
        response = await self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
            **self._receive_options,
        )
        self.health.works()
        messages = response.get("Messages", [])
        if messages:
            await self._handle(messages)

    def _failed(self, exc: Exception) -> None:
        if self._prepare is not None and error_code(exc) in MISSING_QUEUE:
            self.queue_url = None  # prepared again at the next try
        self.health.failed(exc)
