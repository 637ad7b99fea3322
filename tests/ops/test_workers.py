"""`notifier serve --workers N` as systemd runs it: one READY for all, signals reaching every
worker, each worker an instance of its own, a dead worker started again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from notifier.apikeys import hash_key
from notifier.config import ConfigError
from notifier.config_loader import load_settings
from notifier.local.settings import LOCAL_CONFIG
from notifier.local.stack import LocalStack
from notifier.ops.workers import worker_settings
from tests.support.eventually import EVENTUALLY, eventually
from tests.support.serve import serve_config, serve_under_systemd

HELD = {"Prefer": "wait=60"}


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.add(int(entry))
    return found


async def post(
    http: aiohttp.ClientSession, url: str, key: str, **body: object
) -> dict[str, object]:
    async with http.post(url, json=body, headers={**HELD, "x-api-key": key}) as response:
        answer: dict[str, object] = await response.json()
        assert response.status == 200, answer
        return answer


async def test_workers_serve_as_instances_of_their_own_under_systemd(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    served = await serve_under_systemd(local_stack, tmp_path, "--workers", "2")
    key, config, systemd, process = served.key, served.config, served.systemd, served.process
    details = {"x-api-key": key}  # /readyz names the instance only to a key's holder
    notified = systemd.notified
    with systemd:
        async with asyncio.timeout(90):
            ready = await notified()
        # One READY for both, once both serve, naming each one's own address.
        match = re.fullmatch(
            r"READY=1\nSTATUS=serving on (\S+) with 2 workers: "
            r"serve-test-1 (\S+), serve-test-2 (\S+)",
            ready,
        )
        assert match, ready
        shared, *own = match.groups()
        async with aiohttp.ClientSession() as http:
            for index, url in enumerate(own, start=1):
                async with http.get(f"{url}/readyz", headers=details) as response:
                    assert (await response.json())["instanceId"] == f"serve-test-{index}"
                answer = await post(http, f"{url}/hello", key, who=index)
                # Completed through this worker's own MQTT subtopic.
                assert answer["completedVia"] == "mqtt"
                assert answer["output"] == {
                    "who": index, "subtopic": f"serve-test-{index}", "startedBy": "test",
                    "taskresult": "Hello 102 Class",
                }  # fmt: skip
                # Its own figures on its own port: its one answer so far.
                async with http.get(f"{url}/metrics", headers={"x-api-key": key}) as response:
                    metrics = await response.text()
                assert 'notifier_requests_total{route="hello",status="SUCCEEDED"} 1.0' in metrics
            async with aiohttp.ClientSession() as fresh:
                assert (await post(fresh, f"{shared}/hello", key))["status"] == "SUCCEEDED"

            # SIGHUP reaches every worker: a route added by the reload is served by each,
            # and a request held across it is answered.
            held = asyncio.ensure_future(post(http, f"{own[0]}/hello", key, waitSeconds=2))

            async def holding() -> bool:
                async with http.get(f"{own[0]}/readyz", headers=details) as response:
                    return bool((await response.json())["held"])

            await eventually(holding, interval=0.05)
            routes = {"hello": "HelloStateMachineArn", "again": "HelloStateMachineArn"}
            config.write_text(serve_config(local_stack, hash_key(key), routes))
            process.send_signal(signal.SIGHUP)
            async with asyncio.timeout(60):
                assert (await notified()).startswith("RELOADING=1\nMONOTONIC_USEC=")
                assert (await notified()).startswith("READY=1\nSTATUS=serving on")
            for url in own:
                assert (await post(http, f"{url}/again", key))["status"] == "SUCCEEDED"
            assert (await held)["status"] == "SUCCEEDED"

            # A worker that dies is started again, on its own port, as the same instance.
            workers = children(process.pid)
            assert len(workers) == 2
            async with http.get(f"{own[1]}/readyz", headers=details) as response:
                assert (await response.json())["instanceId"] == "serve-test-2"
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
                break
            await eventually(lambda: children(process.pid) - workers, 90, interval=0.2)
            for index, url in enumerate(own, start=1):

                async def readiness(url: str = url) -> dict[str, Any] | None:
                    try:
                        async with http.get(f"{url}/readyz", headers=details) as response:
                            body: dict[str, Any] = await response.json()
                            return body
                    except aiohttp.ClientConnectionError:
                        return None

                body = await eventually(readiness, 90, interval=0.2)
                assert body["instanceId"] == f"serve-test-{index}"
        # The watchdog is fed while every worker's loop turns, the restarted one's too.
        async with asyncio.timeout(EVENTUALLY):
            await systemd.pinged()

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await notified() == "STOPPING=1"
            await process.wait()
    assert process.returncode == 0
    assert not children(process.pid)


def test_each_worker_has_the_instance_id_suffixed_within_the_limits() -> None:
    queue = {
        "NOTIFIER_SQS_QUEUE_PREFIX": "q" * 55,
        "NOTIFIER_SQS_DEAD_LETTER_QUEUE_ARN": "arn:aws:sqs:us-east-1:123456789012:dead",
    }
    settings = load_settings(LOCAL_CONFIG, queue)
    ids = [worker_settings(settings, "daemon-a", k, 2).daemon.instance_id for k in (1, 2)]
    assert ids == ["daemon-a-1", "daemon-a-2"]
    with pytest.raises(ConfigError, match="instance_id"):
        worker_settings(settings, "x" * 63, 10, 10)
    with pytest.raises(ConfigError, match="queue_prefix"):
        worker_settings(settings, "x" * 23, 10, 10)  # a queue name of 81 characters


def test_the_instance_shares_of_step_functions_quotas_are_divided_among_its_workers() -> None:
    env = {"NOTIFIER_DAEMON_SFN_READ_RATE": "6", "NOTIFIER_DAEMON_SFN_START_RATE": "300"}
    settings = load_settings(LOCAL_CONFIG, env)
    workers = [worker_settings(settings, "daemon-a", k, 3).daemon for k in (1, 2, 3)]
    assert [(w.sfn_read_rate, w.sfn_start_rate) for w in workers] == [(2.0, 100.0)] * 3
