"""``notifier cleanup``: delete the completion queues of instances that are gone.

Each running instance tags its queue with the time it was last seen, every
:data:`~notifier.sources.queue.LAST_SEEN_INTERVAL` seconds. A queue whose tag is older than the
silence allowed belongs to an instance that has not run since (a retired instance id, or a
daemon moved to another machine or port): it is deleted, with whatever it still holds. A
queue without the tag is kept, whatever its age: nothing says whose it is.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from notifier.sources.queue import LAST_SEEN_INTERVAL, LAST_SEEN_TAG

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger(__name__)

MIN_SILENCE = timedelta(seconds=2 * LAST_SEEN_INTERVAL)
"""The shortest silence allowed: a running instance renews its tag within half of it."""
DEFAULT_SILENCE = timedelta(days=7)
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def silence(text: str) -> timedelta:
    """A duration such as ``36h`` or ``7d`` (s, m, h, d), at least :data:`MIN_SILENCE`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a number and s, m, h or d, e.g. 7d")
    value = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if value < MIN_SILENCE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: at least {MIN_SILENCE.total_seconds() / 3600:g}h, twice the time a "
            "running instance takes to say it is there"
        )
    return value


@dataclass(frozen=True)
class CompletionQueue:
    url: str
    last_seen: datetime | None
    """From its tag; None when it has none (or one that cannot be read)."""

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


async def completion_queues(sqs: SQSClient, prefix: str) -> list[CompletionQueue]:
    """The queues named ``<prefix>...``, with when their instance was last seen."""
    queues = []
    async for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix):
        for url in page.get("QueueUrls", []):
            tags = (await sqs.list_queue_tags(QueueUrl=url)).get("Tags", {})
            queues.append(CompletionQueue(url, _parse_time(tags.get(LAST_SEEN_TAG))))
    return queues


async def delete_silent_queues(
    sqs: SQSClient,
    prefix: str,
    silent_for: timedelta,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> tuple[list[CompletionQueue], list[CompletionQueue]]:
    """Delete the queues whose instance was last seen over ``silent_for`` ago (with
    ``dry_run``, only say which); the queues deleted and those kept."""
    cutoff = (now or datetime.now(UTC)) - silent_for
    deleted, kept = [], []
    for queue in await completion_queues(sqs, prefix):
        if queue.last_seen is None or queue.last_seen > cutoff:
            kept.append(queue)
            continue
        if not dry_run:
            await sqs.delete_queue(QueueUrl=queue.url)
            log.info("deleted %s, last seen %s", queue.name, queue.last_seen.isoformat())
        deleted.append(queue)
    return deleted, kept


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
