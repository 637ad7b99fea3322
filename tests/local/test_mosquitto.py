"""A stock MQTT client, Debian's mosquitto_sub (which `make test` installs), receives a
completion from the local stack over TLS with a `notifier token`, as it would from IoT Core."""

from __future__ import annotations

import asyncio
import json
import shutil

from notifier.local.stack import LocalStack
from tests.local.test_workflows import new_id
from tests.support.mqtt import notifier_token

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
STDBUF = shutil.which("stdbuf")  # coreutils: its debug lines come through a pipe line by line


async def test_mosquitto_sub_receives_a_completion_over_tls(local_stack: LocalStack) -> None:
    assert MOSQUITTO_SUB, "mosquitto_sub not found: `make test` installs Debian's mosquitto-clients"
    subtopic = new_id("mosquitto")
    token = await notifier_token(local_stack, "--subtopic", subtopic)
    assert STDBUF, "stdbuf (coreutils) not found"
    subscriber = await asyncio.create_subprocess_exec(
        STDBUF, "-oL", MOSQUITTO_SUB, "-h", token["endpoint"], "-p", str(token["port"]),
        "--cafile", token["caFile"], "--tls-alpn", token["alpn"], "-V", "mqttv311",
        "-u", token["username"], "-P", token["password"], "-i", token["clientId"],
        "-t", token["topicFilters"][0], "-q", "1", "-v", "-d", "-C", "1", "-W", "120",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert subscriber.stdout is not None
    try:
        async with asyncio.timeout(60):  # -d: it says when the broker acknowledged the SUBSCRIBE
            while b"received SUBACK" not in (line := await subscriber.stdout.readline()):
                assert line, (await subscriber.communicate())[1].decode()
        async with local_stack.aws().client("stepfunctions") as sfn:
            started = await sfn.start_execution(
                stateMachineArn=local_stack.outputs["HelloStateMachineArn"],
                input=json.dumps({"subtopic": subtopic, "who": "mosquitto"}),
            )
        stdout, stderr = await asyncio.wait_for(subscriber.communicate(), 120)
    finally:
        if subscriber.returncode is None:
            subscriber.kill()
            await subscriber.wait()
    assert subscriber.returncode == 0, stderr.decode()
    received = [line for line in stdout.decode().splitlines() if line.startswith("notifier/")]
    topic, _, payload = received[0].partition(" ")
    completion = json.loads(payload)
    assert topic == f"notifier/{subtopic}/{completion['txnId']}"
    assert completion["executionArn"] == started["executionArn"]
    assert completion["status"] == "SUCCEEDED" and completion["output"]["who"] == "mosquitto"
