"""The HTTP API end to end against the local stack: workflows really run, completions
arrive over MQTT, two instances share the stack. The contract itself, status by status, is
tested handler by handler in test_handlers.py."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest

import notifier
from notifier.app.state import EXECUTIONS, MQTT, MQTT_POOL, OUTPUT_FETCHER, POLLER, SQS
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from notifier.requests.idempotency import fingerprint
from notifier.requests.ids import KEYED_PREFIX, is_txn_id, keyed_txn_id
from tests.local.test_workflows import Notifications
from tests.support.daemons import DaemonFactory, call
from tests.support.eventually import eventually
from tests.support.mqtt import MqttRecorder

LONG = {"Prefer": "wait=60"}


def assert_final(body: dict[str, Any], status: str, via: str = "mqtt") -> None:
    assert is_txn_id(body["transactionId"])
    assert body["executionArn"].endswith(f":{body['transactionId']}")
    assert body["status"] == status
    assert body["completedVia"] == via
    timings = body["timings"]
    for key in ("receivedAt", "notifiedAt", "answeredAt"):
        assert timings[key].endswith("Z")
    if via == "mqtt":
        # The workflow's own finishing time, carried by its notification.
        assert timings["stoppedAt"].endswith("Z")
        assert timings["stoppedAt"] <= timings["notifiedAt"] <= timings["answeredAt"]
        assert timings["durationsMs"]["stoppedToAnswered"] >= 0


# ---------------------------------------------------------------- every route, every status


async def test_hello_succeeds(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    status, headers, body = await call(
        http, "POST", f"{daemon.url}/hello", json={"name": "ada"}, headers=LONG
    )
    assert status == 200, body
    assert_final(body, "SUCCEEDED")
    assert body["output"]["name"] == "ada"
    assert "taskresult" in body["output"]
    assert "processData" not in body
    assert headers["Preference-Applied"] == "wait=60"
    assert body["timings"]["startedAt"] <= body["timings"]["notifiedAt"]


async def test_an_output_too_large_for_mqtt_comes_as_one_pointer_and_is_fetched(
    daemon: Daemon, http: aiohttp.ClientSession, stack: LocalStack
) -> None:
    """Between IoT's 128 KB and Step Functions' 256 KiB: the workflow's full notification is
    refused, its pointer is published instead, and the daemon answers with the output it
    fetched. The forwarder, which sees the workflow published, adds nothing."""
    blob = "x" * 150_000
    instance = daemon.app[MQTT].instance_id
    fetcher = daemon.app[OUTPUT_FETCHER]
    pointers = fetcher.pointers
    prefix = f"{stack.settings.topic_root}/{instance}"
    async with MqttRecorder(stack, instance) as mqtt, MqttRecorder(stack, None) as status_feed:
        status, _, body = await call(
            http, "POST", f"{daemon.url}/hello", json={"blob": blob}, headers=LONG
        )
        assert status == 200, body
        messages = await Notifications(stack, mqtt, status_feed, prefix).all_of(
            body["transactionId"], body["executionArn"]
        )
    assert_final(body, "SUCCEEDED")
    assert body["output"]["blob"] == blob
    (pointer,) = messages
    assert pointer["fetchOutput"] is True and "output" not in pointer
    assert pointer.get("publishedBy") is None  # the workflow's own
    assert fetcher.pointers == pointers + 1


async def test_processa_succeeds_with_its_process_data(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, _, body = await call(http, "POST", f"{daemon.url}/p1", json={"foo": "x"}, headers=LONG)
    assert status == 200, body
    assert_final(body, "SUCCEEDED")
    assert body["output"] == {"processData": body["transactionId"]}
    data = body["processData"]
    assert data["foo"] == "x"
    assert all(f"step-{s}-output" in data for s in "abcdef")


async def test_processa_fails_with_502(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    status, _, body = await call(
        http, "POST", f"{daemon.url}/p1", json={"fail": "step-c"}, headers=LONG
    )
    assert status == 502, body
    # A failure comes from the status forwarder: its publish and its queue message race.
    assert_final(body, "FAILED", via=body["completedVia"])
    assert body["completedVia"] in ("mqtt", "sqs")
    assert body["error"] == "ForcedFailure"
    assert "step-c" in body["cause"]
    assert body["output"] is None
    assert "step-b-output" in body["processData"]
    assert "step-c-output" not in body["processData"]


async def test_qc_succeeds(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    status, _, body = await call(
        http, "POST", f"{daemon.url}/qc", json={"GroupID": "g1", "StreamID": "s1"}, headers=LONG
    )
    assert status == 200, body
    assert_final(body, "SUCCEEDED")
    assert body["output"]["GroupID"] == "g1"


async def test_archive_succeeds(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    request = {"approval_needed": False, "archive": True, "quality": 90}
    status, _, body = await call(http, "POST", f"{daemon.url}/archive", json=request, headers=LONG)
    assert status == 200, body
    assert_final(body, "SUCCEEDED")


async def test_stop_answers_held_requests_409(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    status, headers, started = await call(
        http, "POST", f"{daemon.url}/hello", json={"waitSeconds": 30}, headers={"Prefer": "wait=0"}
    )
    assert status == 202, started
    held = asyncio.create_task(call(http, "GET", f"{daemon.url}{headers['Location']}?wait=60"))
    txn = daemon.registry.get(started["transactionId"])
    assert txn is not None
    await eventually(lambda: bool(txn.waiters))

    status, _, stopped = await call(http, "POST", f"{daemon.url}{headers['Location']}/stop")
    assert status == 200, stopped
    assert stopped["status"] == "ABORTED"

    status, _, body = await held
    assert status == 409, body
    assert_final(body, "ABORTED", via="stop")

    status, _, again = await call(http, "POST", f"{daemon.url}{headers['Location']}/stop")
    assert status == 409, again


async def test_timed_out_is_504_when_reattached(
    daemon: Daemon, other_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, headers, started = await call(
        http, "POST", f"{daemon.url}/timesout", json={}, headers={"Prefer": "wait=0"}
    )
    assert status == 202, started
    # The other instance did not start it: DescribeExecution, then polling until it ends.
    status, _, body = await call(http, "GET", f"{other_daemon.url}{headers['Location']}?wait=60")
    assert status == 504, body
    assert_final(body, "TIMED_OUT", via="poll")
    assert body["timings"]["startedAt"] is None


# ---------------------------------------------------------------- holding and re-attaching


async def test_still_running_is_202_then_reattach(
    daemon: Daemon, other_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await call(
        http, "POST", f"{daemon.url}/hello", json={"waitSeconds": 1}, headers={"Prefer": "wait=0"}
    )
    assert status == 202, body
    location = headers["Location"]
    assert location == f"/executions/{body['transactionId']}"
    assert int(headers["Retry-After"]) > 0
    assert body["status"] == "RUNNING"

    status, _, final = await call(http, "GET", f"{daemon.url}{location}?wait=60")
    assert status == 200, final
    assert_final(final, "SUCCEEDED")
    assert final["timings"]["startedAt"] == body["timings"]["startedAt"]

    # From another instance, after the end: one DescribeExecution.
    status, _, elsewhere = await call(http, "GET", f"{other_daemon.url}{location}?wait=0")
    assert status == 200, elsewhere
    assert_final(elsewhere, "SUCCEEDED", via="poll")
    assert elsewhere["output"] == final["output"]


async def test_reattach_from_another_instance_while_running(
    daemon: Daemon, other_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await call(
        http, "POST", f"{daemon.url}/p1", json={"n": 1}, headers={"Prefer": "wait=0"}
    )
    assert status == 202, body
    status, _, final = await call(http, "GET", f"{other_daemon.url}{headers['Location']}?wait=60")
    assert status == 200, final
    assert_final(final, "SUCCEEDED", via="poll")
    assert "step-f-output" in final["processData"]


async def test_a_keyed_request_is_one_transaction_at_every_instance(
    daemon: Daemon, other_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    key = {"Idempotency-Key": f'"order-{secrets.token_hex(4)}"', **LONG}
    status, _, first = await call(http, "POST", f"{daemon.url}/p1", json={"foo": "x"}, headers=key)
    assert status == 200, first
    txn_id = first["transactionId"]
    assert txn_id.startswith(KEYED_PREFIX) and "step-f-output" in first["processData"]
    # The same key and body, here and at another instance: the same transaction's answer.
    for instance in (daemon, other_daemon):
        status, _, again = await call(
            http, "POST", f"{instance.url}/p1", json={"foo": "x"}, headers=key
        )
        assert (status, again["transactionId"]) == (200, txn_id), again
        assert again["processData"] == first["processData"]
    # Another body: 422 at either, told from what is stored after the steps rewrote it.
    for instance in (daemon, other_daemon):
        status, _, refused = await call(
            http, "POST", f"{instance.url}/p1", json={"foo": "y"}, headers=key
        )
        assert (status, refused["transactionId"]) == (422, txn_id), refused
    status, _, found = await call(http, "GET", f"{other_daemon.url}/p1", headers=key)
    assert (status, found["processData"]) == (200, first["processData"])
    # One execution under that name: the listing of the route.
    status, _, listing = await call(http, "GET", f"{daemon.url}/executions?route=p1&limit=50")
    assert status == 200, listing
    assert [e["transactionId"] for e in listing["executions"]].count(txn_id) == 1


async def test_a_keyed_start_made_again_while_running_returns_the_execution(
    daemon: Daemon, stack: LocalStack
) -> None:
    """Step Functions' own idempotency through the daemon's calls: StartExecution with the
    same name and input returns the running execution; once it ended, it is found."""
    executions = daemon.app[EXECUTIONS]
    body = {"waitSeconds": 30}
    txn_id = keyed_txn_id("silent", secrets.token_hex(4), None)
    arn = executions.execution_arn("silent", txn_id)
    starts = [
        await executions.start_keyed("silent", txn_id, body, fingerprint(body)) for _ in range(2)
    ]
    assert [start.started_at is not None for start in starts] == [True, True]
    await executions.stop(arn)
    ended = await executions.start_keyed("silent", txn_id, body, fingerprint(body))
    assert ended.description is not None and ended.description["status"] == "ABORTED"
    async with stack.aws().client("stepfunctions") as sfn:
        listed = await sfn.list_executions(
            stateMachineArn=daemon.settings.routes["silent"].state_machine
        )
    assert [e["executionArn"] for e in listed["executions"]].count(arn) == 1


async def test_two_hundred_concurrent_requests_each_get_their_own_answer(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    async def one(n: int) -> tuple[int, dict[str, Any]]:
        status, _, body = await call(
            http, "POST", f"{daemon.url}/hello", json={"n": n}, headers={"Prefer": "wait=110"}
        )
        return status, body

    pool = daemon.app[MQTT_POOL]

    def received() -> int:  # over every connection: the rate may need more than one
        return sum(connection.source.received for connection in pool.connections)

    before = received()
    results = await asyncio.gather(*(one(n) for n in range(200)))
    assert [status for status, _ in results] == [200] * 200
    assert [body["output"]["n"] for _, body in results] == list(range(200))
    assert len({body["transactionId"] for _, body in results}) == 200
    # Completed by MQTT, or now and then by the queue when it was first on a busy machine, or
    # by the sweeps when a machine too busy to answer a ping had the link renewed; MQTT
    # delivered every one all the same.
    assert {body["completedVia"] for _, body in results} <= {"mqtt", "sqs", "poll"}
    await eventually(lambda: received() >= before + 200)


async def test_instances_receive_only_their_own_completions(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as first, daemon_factory() as second:

        async def run(d: Daemon, n: int) -> dict[str, Any]:
            status, _, body = await call(
                http, "POST", f"{d.url}/hello", json={"n": n}, headers=LONG
            )
            assert status == 200, body
            return body

        answers = await asyncio.gather(*(run(d, n) for n in range(10) for d in (first, second)))
        # Each completion comes twice, each on a channel of its own instance only: from the
        # workflow's Notify state over MQTT (one message on the instance's connection), and
        # from the status forwarder to the instance's queue. The first to arrive answers;
        # the other is ignored. A message of the other instance's would be received and
        # ignored as well.
        for d, own in ((first, answers[0::2]), (second, answers[1::2])):
            mqtt, sqs = d.app[MQTT], d.app[SQS]
            by_mqtt = sum(a["completedVia"] == "mqtt" for a in own)
            assert by_mqtt + sum(a["completedVia"] == "sqs" for a in own) == 10
            await eventually(lambda mqtt=mqtt, sqs=sqs: mqtt.received >= 10 and sqs.received >= 10)
            # Once the forwarder is done with every end (each queue message is sent before
            # the forwarder would publish), nothing more arrives over MQTT.
            await asyncio.sleep(1)
            assert (mqtt.received, mqtt.ignored) == (10, 10 - by_mqtt)
            assert (sqs.received, sqs.resolved) == (10, 10 - by_mqtt)
            assert d.app[POLLER].calls == 0


# ---------------------------------------------------------------- AWS errors


async def test_an_aws_error_is_502_with_its_code(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    # moto's own answer for a state machine that does not exist, through the real client.
    status, _, body = await call(http, "POST", f"{daemon.url}/missing", json={})
    assert status == 502, body
    assert body["awsErrorCode"] == "StateMachineDoesNotExist"
    assert daemon.registry.held == 0


# ---------------------------------------------------------------- shutdown


async def test_drain_lets_held_requests_finish_then_answers_202(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as d:
        quick = asyncio.create_task(
            call(http, "POST", f"{d.url}/hello", json={"waitSeconds": 1}, headers=LONG)
        )
        slow = asyncio.create_task(
            call(http, "POST", f"{d.url}/hello", json={"waitSeconds": 30}, headers=LONG)
        )
        await eventually(lambda: d.registry.held == 2)
        await d.drain(grace=8)
        status, _, body = await quick
        assert status == 200, body
        status, headers, body = await slow
        assert status == 202, body
        assert headers["Location"] == f"/executions/{body['transactionId']}"
        # New connections are refused; one kept alive from before is told to go away.
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectionError):
                await call(fresh, "POST", f"{d.url}/hello", json={})
        status, headers, body = await call(http, "POST", f"{d.url}/hello", json={})
        assert status == 503, body
        assert "Retry-After" in headers


# ---------------------------------------------------------------- operating endpoints


async def test_metrics_count_requests_completions_and_aws_calls(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as daemon:
        for route in ("hello", "p1"):
            status, _, body = await call(
                http, "POST", f"{daemon.url}/{route}", json={}, headers=LONG
            )
            assert status == 200, body
        async with http.get(f"{daemon.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['notifier_requests_total{route="hello",status="SUCCEEDED"}'] == 1
    assert samples['notifier_requests_total{route="p1",status="SUCCEEDED"}'] == 1
    assert samples['notifier_completions_total{source="mqtt"}'] == 2
    assert samples['notifier_completion_latency_seconds_count{source="mqtt"}'] == 2
    assert samples['notifier_aws_api_calls_total{operation="StartExecution"}'] == 2
    assert samples['notifier_aws_api_calls_total{operation="PutObject"}'] == 2
    # Both made by the fast path, none handed to the AWS SDK.
    for operation in ("PutObject", "StartExecution"):
        assert samples[f'notifier_aws_fast_path_handovers_total{{operation="{operation}"}}'] == 0
    assert samples["notifier_mqtt_connected"] == 1
    # Two completions a while apart: the first connection carries them; none more is opened.
    assert samples["notifier_mqtt_connections"] == 1
    assert samples["notifier_mqtt_connections_max"] == 6  # 300 a second at 50 each
    assert samples['notifier_mqtt_messages_total{connection="0",outcome="received"}'] >= 2
    assert samples['notifier_mqtt_connection_peak_messages_per_second{connection="0"}'] >= 1
    assert samples["notifier_mqtt_reconnects_total"] == 0
    assert samples["notifier_token_refreshes_total"] == 0
    assert samples['notifier_mqtt_renewals_total{connection="0"}'] == 0
    for operation in ("PutObject", "StartExecution"):
        assert samples[f'notifier_aws_fast_path_enabled{{operation="{operation}"}}'] == 1
    assert samples[f'notifier_build_info{{version="{notifier.__version__}"}}'] == 1
    assert samples["process_open_fds"] > 0
    assert samples["notifier_held_requests"] == 0
    # Completions over MQTT cost no DescribeExecution.
    assert 'notifier_aws_api_calls_total{operation="DescribeExecution"}' not in samples
    assert samples['notifier_sfn_throttled_total{api="StartExecution"}'] == 0


async def test_readyz_reports_mqtt_and_aws(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    status, _, body = await call(http, "GET", f"{daemon.url}/readyz")
    assert status == 200
    assert body["ready"] and body["mqttConnected"] and body["awsReachable"]
    assert body["awsError"] is None and body["accepting"]
    # The daemon is shared: a test before may have needed more than the first connection.
    details = body["mqttConnectionDetails"]
    assert 1 <= body["mqttConnections"] == len(details) <= body["mqttConnectionsMax"] == 6
    assert details[0]["subtopic"] == daemon.instance_id and details[0]["connected"]


# ---------------------------------------------------------------- the seeds' own commands


async def test_an_empty_post_runs_processa_with_its_default_input(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    # `curl -i -X POST .../p1`: no body, no Content-Type.
    async with http.post(
        f"{daemon.url}/p1", headers=LONG, skip_auto_headers=["Content-Type"]
    ) as response:
        status, body = response.status, await response.json()
    assert status == 200, body
    assert_final(body, "SUCCEEDED")
    data = body["processData"]
    assert (data["foo"], data["bar"]) == ("foo val", "bar val")
    assert all(f"step-{s}-output" in data for s in "abcdef")
    status, headers, body = await call(http, "GET", f"{daemon.url}/p1")
    assert (status, headers["Allow"]) == (405, "POST")
    assert f"curl -X POST {daemon.url}/p1" in body["message"]


async def test_an_express_route_is_answered_by_start_sync_execution(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, _, body = await call(
        http, "POST", f"{daemon.url}/hello-express", json={"who": "express"}, headers=LONG
    )
    assert status == 200, body
    assert (body["status"], body["completedVia"]) == ("SUCCEEDED", "sync")
    assert body["output"]["who"] == "express"
    assert f":express:notifier-local-HelloExpress:{body['transactionId']}:" in body["executionArn"]
    assert body["timings"]["stoppedAt"] <= body["timings"]["answeredAt"]


async def test_an_express_run_longer_than_the_hold_is_answered_at_its_end(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    status, headers, started = await call(
        http,
        "POST",
        f"{daemon.url}/hello-express",
        json={"waitSeconds": 2},
        headers={"Prefer": "wait=0.5"},
    )
    assert status == 202, started
    status, _, body = await call(http, "GET", f"{daemon.url}{headers['Location']}?wait=60")
    assert status == 200, body
    assert body["transactionId"] == started["transactionId"]
    assert body["completedVia"] in ("sync", "mqtt")
    assert body["output"]["waitSeconds"] == 2


async def test_an_execution_s_history_is_read_a_page_at_a_time(
    daemon: Daemon, http: aiohttp.ClientSession, stack: LocalStack
) -> None:
    status, _, body = await call(
        http, "POST", f"{daemon.url}/hello", json={"name": "ada"}, headers=LONG
    )
    assert status == 200, body
    async with stack.aws().client("stepfunctions") as sfn:
        expected = (await sfn.get_execution_history(executionArn=body["executionArn"]))["events"]
    assert len(expected) > 3
    events: list[dict[str, Any]] = []
    token = None
    for name in (body["transactionId"], body["executionArn"]):
        events, token = [], None
        while True:
            query = {"limit": "3", **({"nextToken": token} if token else {})}
            status, _, page = await call(
                http, "GET", f"{daemon.url}/executions/{name}/history", params=query
            )
            assert status == 200, page
            assert len(page["events"]) <= 3
            events.extend(page["events"])
            token = page["nextToken"]
            if token is None:
                break
        assert [event["id"] for event in events] == [event["id"] for event in expected]
        assert [event["type"] for event in events] == [event["type"] for event in expected]
    status, _, error = await call(
        http, "GET", f"{daemon.url}/executions/{body['transactionId']}/history?nextToken=nope"
    )
    assert status == 400, error


# ---------------------------------------------------------------- redrive


async def test_a_redriven_execution_is_followed_to_its_new_end_at_every_instance(
    daemon: Daemon, other_daemon: Daemon, http: aiohttp.ClientSession, stack: LocalStack
) -> None:
    status, _, failed = await call(
        http, "POST", f"{daemon.url}/p1", json={"fail": "step-c"}, headers=LONG
    )
    assert (status, failed["status"]) == (502, "FAILED"), failed
    txn_id = failed["transactionId"]
    # Another instance re-attaches and remembers the failure.
    status, _, body = await call(http, "GET", f"{other_daemon.url}/executions/{txn_id}?wait=0")
    assert (status, body["status"]) == (502, "FAILED")
    # What made it fail is put right, and the execution redriven.
    bucket = daemon.settings.s3.bucket
    async with stack.aws().client("s3") as s3:
        await s3.put_object(Bucket=bucket, Key=txn_id, Body=b'{"foo": "fixed"}')
    status, headers, body = await call(http, "POST", f"{daemon.url}/executions/{txn_id}/redrive")
    assert (status, headers["Location"]) == (202, f"/executions/{txn_id}"), body
    # Both instances answer its new end, not the failure they remembered.
    for instance in (daemon, other_daemon):
        status, _, body = await call(http, "GET", f"{instance.url}/executions/{txn_id}?wait=60")
        assert (status, body["status"]) == (200, "SUCCEEDED"), body
        assert body["processData"]["foo"] == "fixed"
    # A succeeded execution is not redriven again.
    status, _, body = await call(http, "POST", f"{daemon.url}/executions/{txn_id}/redrive")
    assert status == 409, body
