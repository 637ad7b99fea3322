"""The HTTP contract, end to end against the local stack."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import aiohttp
import pytest

from notifier.apikeys import hash_key, new_key
from notifier.app import MQTT, POLLER
from notifier.config import ApiKeySettings
from notifier.daemon import Daemon
from notifier.ids import is_txn_id, new_txn_id
from notifier.local.stack import LocalStack
from notifier.logs import JsonFormatter
from tests.daemon.conftest import DaemonFactory, call, eventually, requiring_api_key, settings_for

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
    assert_final(body, "FAILED")
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


async def test_reattach_unknown_or_malformed_is_404(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    for txn_id in ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-an-id"):
        status, _, body = await call(http, "GET", f"{daemon.url}/executions/{txn_id}?wait=0")
        assert status == 404, body
        assert body["message"]
        status, _, body = await call(http, "POST", f"{daemon.url}/executions/{txn_id}/stop")
        assert status == 404, body


async def test_client_disconnect_removes_its_waiter(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    before = daemon.registry.held
    timeout = aiohttp.ClientTimeout(total=0.5)
    with pytest.raises(TimeoutError):
        await call(
            http,
            "POST",
            f"{daemon.url}/hello",
            json={"waitSeconds": 5},
            headers=LONG,
            timeout=timeout,
        )
    await eventually(lambda: daemon.registry.held == before)
    assert daemon.registry.held == before


async def test_two_hundred_concurrent_requests_each_get_their_own_answer(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    async def one(n: int) -> tuple[int, dict[str, Any]]:
        status, _, body = await call(
            http, "POST", f"{daemon.url}/hello", json={"n": n}, headers={"Prefer": "wait=110"}
        )
        return status, body

    results = await asyncio.gather(*(one(n) for n in range(200)))
    assert [status for status, _ in results] == [200] * 200
    assert [body["output"]["n"] for _, body in results] == list(range(200))
    assert len({body["transactionId"] for _, body in results}) == 200
    assert all(body["completedVia"] == "mqtt" for _, body in results)


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
        assert all(a["completedVia"] == "mqtt" for a in answers)
        for d in (first, second):
            mqtt = d.app[MQTT]
            assert mqtt.received == 10
            assert mqtt.ignored == 0
            assert d.app[POLLER].calls == 0


# ---------------------------------------------------------------- bad input


async def test_bad_input(daemon_factory: DaemonFactory, http: aiohttp.ClientSession) -> None:
    async with daemon_factory(NOTIFIER_HTTP_MAX_BODY_BYTES="100") as d:
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("POST", "/hello", {"data": b"{not json"}, 400),
            ("POST", "/hello", {"data": b""}, 400),
            ("POST", "/hello", {"json": [1, 2]}, 400),
            ("POST", "/hello", {"json": {"x": "y" * 200}}, 413),
            ("POST", "/nowhere", {"json": {}}, 404),
            ("GET", "/hello", {}, 405),
            ("GET", "/nowhere/else", {}, 404),
            ("GET", "/executions/01ARZ3NDEKTSV4RRFFQ69G5FAV?wait=soon", {}, 400),
            ("POST", "/missing", {"json": {}}, 502),
        ]
        for method, path, kwargs, expected in cases:
            status, headers, body = await call(http, method, f"{d.url}{path}", **kwargs)
            assert status == expected, (method, path, body)
            assert headers["Content-Type"].startswith("application/json")
            assert isinstance(body["message"], str) and body["message"]
        _, _, body = await call(http, "POST", f"{d.url}/missing", json={})
        assert body["awsErrorCode"] == "StateMachineDoesNotExist"

        async def chunks() -> Any:
            for _ in range(10):
                yield b'{"x": "' + b"y" * 20 + b'"}'

        status, _, body = await call(http, "POST", f"{d.url}/hello", data=chunks())
        assert status == 413, body
        assert d.registry.held == 0


async def test_a_deeply_nested_body_is_a_400(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    for levels in (65, 100_000):  # past the limit; past Python's own recursion limit
        data = b'{"a": ' + b"[" * levels + b"]" * levels + b"}"
        status, _, body = await call(http, "POST", f"{daemon.url}/hello", data=data)
        assert status == 400, body
        assert "nested deeper than 64 levels" in body["message"]
    assert daemon.registry.held == 0


async def test_too_many_held_requests_is_503(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory(NOTIFIER_HTTP_MAX_HELD="2") as d:
        held = [
            asyncio.create_task(
                call(http, "POST", f"{d.url}/hello", json={"waitSeconds": 2}, headers=LONG)
            )
            for _ in range(2)
        ]
        await eventually(lambda: d.registry.held == 2)
        status, headers, body = await call(http, "POST", f"{d.url}/hello", json={})
        assert status == 503, body
        assert int(headers["Retry-After"]) > 0
        assert [s for s, _, _ in await asyncio.gather(*held)] == [200, 200]


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
    assert samples["notifier_mqtt_connected"] == 1
    assert samples["notifier_mqtt_reconnects_total"] == 0
    assert samples["notifier_token_refreshes_total"] == 0
    assert samples["notifier_held_requests"] == 0
    # Completions over MQTT cost no DescribeExecution.
    assert 'notifier_aws_api_calls_total{operation="DescribeExecution"}' not in samples


async def test_openapi_document_describes_every_route_served(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{daemon.url}/openapi.json") as response:
        document = await response.json()
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = {
        (
            route.method,
            route.resource.canonical.replace("{txn_id}", "{txnId}").replace(
                "{approval_id}", "{approvalId}"
            ),
        )
        for route in daemon.app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        # the page's scripts and styles, not API
        and not route.resource.canonical.startswith("/dashboard/static")
    }
    assert documented == served
    route_names = document["paths"]["/{route}"]["post"]["parameters"][0]["schema"]["enum"]
    assert set(route_names) == set(daemon.settings.routes)


async def test_api_keys_guard_start_and_stop_with_a_rate_limit(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    key = new_key()
    settings = requiring_api_key(
        settings_for(stack), "ci", ApiKeySettings(sha256=hash_key(key), rate=0.001, burst=2)
    )
    async with Daemon(settings) as guarded:
        url = f"{guarded.url}/hello"
        missing = await call(http, "POST", url, json={})
        wrong = await call(http, "POST", url, json={}, headers={"x-api-key": key[::-1]})
        assert (missing[0], wrong[0]) == (401, 401)
        assert "x-api-key" in missing[2]["message"]
        stop = await call(http, "POST", f"{guarded.url}/executions/{new_txn_id()}/stop")
        assert stop[0] == 401

        allowed = {"x-api-key": key, **LONG}
        first = await call(http, "POST", url, json={"n": 1}, headers=allowed)
        second = await call(http, "POST", url, json={"n": 2}, headers=allowed)
        limited = await call(http, "POST", url, json={"n": 3}, headers=allowed)
        assert (first[0], second[0]) == (200, 200)
        assert limited[0] == 429 and int(limited[1]["Retry-After"]) >= 1
        # Reading is open: re-attach needs no key.
        reattached = await call(
            http, "GET", f"{guarded.url}/executions/{first[2]['transactionId']}"
        )
        assert reattached[0] == 200
        async with http.get(f"{guarded.url}/openapi.json") as response:
            document = await response.json()
        assert document["paths"]["/{route}"]["post"]["security"] == [{"apiKey": []}]


async def test_lines_about_a_request_carry_its_transaction(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("notifier")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        status, _, body = await call(http, "POST", f"{daemon.url}/hello", json={}, headers=LONG)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert status == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    answered = [line for line in lines if line["message"] == "POST /hello: SUCCEEDED via mqtt"]
    assert len(answered) == 1
    assert answered[0]["txnId"] == body["transactionId"]
    assert answered[0]["executionArn"] == body["executionArn"]


async def test_readyz_reports_mqtt_and_aws(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    status, _, body = await call(http, "GET", f"{daemon.url}/readyz")
    assert status == 200
    assert body["ready"] and body["mqttConnected"] and body["awsReachable"]
    assert body["awsError"] is None and body["accepting"]
