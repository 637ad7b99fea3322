"""An instance id that outlives a restart, and the cleanup of the queues of instances gone."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from notifier.apikeys import hash_key, new_key
from notifier.app.state import SQS
from notifier.daemon import Daemon
from notifier.identity import derived_instance_id, instance_id, machine_id
from notifier.local.stack import LocalStack
from notifier.ops.cleanup import delete_silent_queues
from notifier.sources.queue import LAST_SEEN_TAG, last_seen_value
from tests.support.balancer import free_port
from tests.support.daemons import settings_for
from tests.support.eventually import eventually
from tests.support.serve import run_notifier, serve_config


def test_the_derived_id_is_the_machines_and_ports_and_hides_the_machine_id(
    tmp_path: Path,
) -> None:
    machine = tmp_path / "machine-id"
    machine.write_text("0123456789abcdef0123456789abcdef\n")
    assert machine_id([tmp_path / "absent", machine]) == "0123456789abcdef0123456789abcdef"
    one = derived_instance_id(3000, "0123456789abcdef0123456789abcdef")
    assert one == derived_instance_id(3000, "0123456789abcdef0123456789abcdef")
    assert one is not None and "0123456789" not in one and len(one) <= 64
    assert one != derived_instance_id(3001, "0123456789abcdef0123456789abcdef")
    assert one != derived_instance_id(3000, "fedcba9876543210fedcba9876543210")
    assert derived_instance_id(0) is None


def test_a_configured_id_wins_and_port_0_gets_a_new_one_each_time() -> None:
    assert instance_id("mine", 3000) == ("mine", "configured")
    assert instance_id(None, 3000)[0] == instance_id(None, 3000)[0]
    assert instance_id(None, 0)[0] != instance_id(None, 0)[0]


async def completion_queues(stack: LocalStack, prefix: str) -> set[str]:
    async with stack.aws().client("sqs") as sqs:
        return set((await sqs.list_queues(QueueNamePrefix=prefix)).get("QueueUrls", []))


async def test_restarts_without_a_configured_id_reuse_the_queue_and_subtopic(
    stack: LocalStack,
) -> None:
    settings = settings_for(
        stack, NOTIFIER_DAEMON_INSTANCE_ID="", NOTIFIER_HTTP_PORT=str(free_port())
    )
    prefix = stack.outputs["CompletionQueuePrefix"]
    before = await completion_queues(stack, prefix)
    ids, queues = [], []
    for _ in range(3):  # a start and two restarts
        async with Daemon(settings) as daemon:
            await eventually(lambda: daemon.app[SQS].queue_url is not None)  # noqa: B023
            ids.append(daemon.instance_id)
        queues.append(await completion_queues(stack, prefix) - before)
    assert len(set(ids)) == 1
    assert len(queues[0]) <= 1 and queues[1] == queues[2] == queues[0]


async def tag(stack: LocalStack, name: str, last_seen: datetime | None) -> str:
    async with stack.aws().client("sqs") as sqs:
        url: str = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        if last_seen is not None:
            await sqs.tag_queue(QueueUrl=url, Tags={LAST_SEEN_TAG: last_seen_value(last_seen)})
    return url


async def test_cleanup_deletes_only_the_queues_of_instances_silent_past_the_limit(
    stack: LocalStack,
) -> None:
    prefix = f"{stack.outputs['CompletionQueuePrefix']}gone-{secrets.token_hex(3)}-"
    now = datetime.now(UTC)
    gone = await tag(stack, f"{prefix}gone", now - timedelta(days=8))
    running = await tag(stack, f"{prefix}running", now - timedelta(minutes=30))
    untagged = await tag(stack, f"{prefix}untagged", None)
    async with stack.aws().client("sqs") as sqs:
        deleted, kept = await delete_silent_queues(sqs, prefix, timedelta(days=7), dry_run=True)
        assert [q.url for q in deleted] == [gone]
        assert await completion_queues(stack, prefix) == {gone, running, untagged}
        deleted, kept = await delete_silent_queues(sqs, prefix, timedelta(days=7))
    assert [q.url for q in deleted] == [gone]
    assert {q.url for q in kept} == {running, untagged}
    assert await completion_queues(stack, prefix) == {running, untagged}


async def test_the_cleanup_command_reads_the_daemons_configuration(
    stack: LocalStack, tmp_path: Path
) -> None:
    prefix = f"{stack.outputs['CompletionQueuePrefix']}cli-{secrets.token_hex(3)}-"
    gone = await tag(stack, f"{prefix}gone", datetime.now(UTC) - timedelta(days=3))
    config = tmp_path / "notifier.toml"
    config.write_text(
        serve_config(stack, hash_key(new_key()), {"hello": "HelloStateMachineArn"})
        + f'[sqs]\nqueue_prefix = "{prefix}"\n'
        + f'dead_letter_queue_arn = "{stack.outputs["StatusDeadLetterQueueArn"]}"\n'
    )

    async def cleanup(*args: str) -> tuple[int | None, str]:
        process = await run_notifier("cleanup", *args, env={"NOTIFIER_CONFIG": str(config)})
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode, (stdout + stderr).decode()

    status, output = await cleanup("--silent-for", "1h")
    assert status == 2 and "at least 2h" in output
    kept = "0 deleted, 1 kept (0 without a last-seen tag)\n"
    assert await cleanup("--silent-for", "4d") == (0, kept)
    status, output = await cleanup("--silent-for", "2d", "--dry-run")
    assert status == 0 and f"would delete {prefix}gone" in output
    assert await completion_queues(stack, prefix) == {gone}
    status, output = await cleanup("--silent-for", "2d")
    assert status == 0 and f"deleted {prefix}gone" in output
    assert await completion_queues(stack, prefix) == set()

