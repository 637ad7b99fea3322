"""Completions from this instance's own SQS queue: the fallback while MQTT cannot deliver.

The stack's forwarder sends every final status of an execution to the queue
``<queue_prefix><subtopic>``, when it exists. The daemon creates that queue for its own
instance id at start (idempotently: a restarted instance finds its queue and what is in
it), encrypted, redriven to the stack's dead-letter queue, and long-polls it. Only
executions started with this instance's subtopic are sent there, so instances never
consume each other's completions.

A message is deleted once handled: resolved, a duplicate, or for a transaction this
instance no longer holds (it has nobody to answer; a re-attach asks Step Functions). A
message that is not a completion is moved to the dead-letter queue at once, and the loop
goes on. AWS errors never stop the source: it reports them (``error``) and retries with
backoff, creating the queue again if it was deleted.

Once a minute the source reads how many messages wait in the dead-letter queue (for the
metrics), and once an hour it tags its queue with the time it was last seen
(:data:`LAST_SEEN_TAG`): a queue whose tag grows old belongs to an instance that is gone,
which ``notifier cleanup`` deletes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from notifier.aws.sqs import Message, QueueConsumer
from notifier.lifecycle import BackgroundTasks, Health, Service
from notifier.requests.waiters import Registry
from notifier.sources import InvalidNotificationError, parse_notification

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

log = logging.getLogger(__name__)

RETENTION_SECONDS = 86_400
MAX_RECEIVE_COUNT = 5
VISIBILITY_TIMEOUT = 30
LAST_SEEN_TAG = "notifier:last-seen"
"""The queue tag saying when its instance was last running (ISO 8601, UTC, to the second)."""
LAST_SEEN_INTERVAL = 3600.0
"""Seconds between updates of the last-seen tag."""
UPKEEP_INTERVAL = 60.0
"""Seconds between readings of the dead-letter queue's depth."""


def last_seen_value(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SqsSource(Service):
    def __init__(
        self,
        sqs: SQSClient,
        registry: Registry,
        queue_name: str,
        dead_letter_arn: str,
        *,
        wait_seconds: int = 20,
        retry_min: float = 1.0,
        retry_max: float = 30.0,
        on_dead_letters: Callable[[int], None] | None = None,
        upkeep_interval: float = UPKEEP_INTERVAL,
    ) -> None:
        self.sqs = sqs
        self.registry = registry
        self.queue_name = queue_name
        self.dead_letter_arn = dead_letter_arn
        self.received = 0
        self.deleted = 0
        self.resolved = 0
        self.dead_lettered = 0
        self.on_dead_letters = on_dead_letters
        """Told the dead-letter queue's depth at each reading."""
        self.upkeep_interval = upkeep_interval
        self._dead_letter_url: str | None = None
        self._last_seen_at: float | None = None
        """When (monotonic) the last-seen tag was last written."""
        self._batches = 0
        self._tasks = BackgroundTasks()
        self._consumer = QueueConsumer(
            sqs,
            "sqs-source",
            self._handle_batch,
            prepare=self._create_queue,
            wait_seconds=wait_seconds,
            retry_min=retry_min,
            retry_max=retry_max,
            health=Health(f"SQS {queue_name}", log),
        )

    @property
    def queue_url(self) -> str | None:
        return self._consumer.queue_url

    @property
    def error(self) -> str | None:
        """Why the last call to SQS failed; None while it works."""
        return self._consumer.error

    @property
    def healthy(self) -> bool:
        return self.queue_url is not None and self.error is None

    async def start(self) -> None:
        await self._consumer.start()
        self._tasks.every("sqs-upkeep", self.upkeep_interval, self._upkeep, self._upkeep_failed)

    async def stop(self) -> None:
        await self._tasks.stop()
        await self._consumer.stop()

    async def _create_queue(self) -> str:
        dead_letter = self.dead_letter_arn.rsplit(":", 2)
        response = await self.sqs.get_queue_url(
            QueueName=dead_letter[2], QueueOwnerAWSAccountId=dead_letter[1]
        )
        self._dead_letter_url = response["QueueUrl"]
        attributes: dict[QueueAttributeNameType, str] = {
            "SqsManagedSseEnabled": "true",
            "MessageRetentionPeriod": str(RETENTION_SECONDS),
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": self.dead_letter_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
        }
        created = await self.sqs.create_queue(QueueName=self.queue_name, Attributes=attributes)
        queue_url = str(created["QueueUrl"])
        self._last_seen_at = None  # a queue made again is tagged again at once
        log.info("SQS: long-polling %s", queue_url)
        return queue_url

    async def _upkeep(self) -> None:
        """Tag the queue as seen when it is time; read the dead-letter queue's depth."""
        queue_url = self.queue_url
        if queue_url is None or self._dead_letter_url is None:
            return  # not created yet
        now = time.monotonic()
        if self._last_seen_at is None or now - self._last_seen_at >= LAST_SEEN_INTERVAL:
            await self.sqs.tag_queue(
                QueueUrl=queue_url, Tags={LAST_SEEN_TAG: last_seen_value(datetime.now(UTC))}
            )
            self._last_seen_at = now
        if self.on_dead_letters is not None:
            response = await self.sqs.get_queue_attributes(
                QueueUrl=self._dead_letter_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
            self.on_dead_letters(int(response["Attributes"]["ApproximateNumberOfMessages"]))

    def _upkeep_failed(self, exc: Exception) -> None:
        log.warning("SQS %s: tagging it or reading the dead-letter queue failed: %s",
                    self.queue_name, exc)  # fmt: skip

    async def _handle_batch(self, messages: list[Message]) -> None:
        queue_url = self.queue_url
        assert queue_url is not None  # what the batch was received from
        handled = [message for message in messages if await self._handle(message)]
        if handled:
            # Deleted while the next receive waits: the next completions do not wait for it.
            self._batches += 1
            self._consumer.once(f"delete-{self._batches}", self._delete(queue_url, handled))

    async def _delete(self, queue_url: str, handled: list[Message]) -> None:
        """Delete handled messages; one left behind comes back later, and is a duplicate."""
        try:
            await self.sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(handled)
                ],
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("SQS: deleting %d handled messages failed: %s", len(handled), exc)
            return
        self.deleted += len(handled)

    async def _handle(self, message: Message) -> bool:
        """Resolve what ``message`` says; True when it may be deleted."""
        self.received += 1
        try:
            completion = parse_notification(message["Body"].encode(), via="sqs")
        except InvalidNotificationError as exc:
            log.warning("SQS: moving an invalid message to the dead-letter queue: %s", exc)
            assert self._dead_letter_url is not None  # found before the queue was created
            await self.sqs.send_message(QueueUrl=self._dead_letter_url, MessageBody=message["Body"])
            self.dead_lettered += 1
            return True
        txn_id = json.loads(message["Body"])["txnId"]
        about = {"txnId": txn_id, "executionArn": completion.execution_arn or ""}
        if self.registry.resolve(txn_id, completion):
            self.resolved += 1
            log.debug("SQS: completion %s", completion.status, extra=about)
        else:
            log.debug("SQS: duplicate or not held here", extra=about)
        return True
