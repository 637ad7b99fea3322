"""The HTTP contract, handler by handler, with a fake Executions: no AWS, no broker.

What only the real path can show (workflows really running, MQTT, two instances, draining a
listening daemon) is in test_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from notifier import routes
from notifier.apikeys import hash_key, new_key
from notifier.app.routing import Access, UndeclaredAccessError
from notifier.app.state import ADMISSION, AWS_REACHABILITY, METRICS, REGISTRY
from notifier.app.wiring import http_app, reload
from notifier.aws.errors import RATE_LIMITED, AwsError
from notifier.aws.read_budget import ReadBudget
from notifier.aws.sfn_calls import StartPacer
from notifier.config import ApiKeySettings, RouteSettings, Settings
from notifier.dashboard.approval_links import ApprovalLinks
from notifier.logs import JsonFormatter
from notifier.requests.executions import Executions
from notifier.requests.idempotency import fingerprint
from notifier.requests.ids import is_txn_id, keyed_txn_id, new_txn_id
from notifier.requests.listing import InvalidPageTokenError
from notifier.requests.waiters import Completion, Status
from tests.support.eventually import eventually
from tests.support.executions import INSTANCE, ROUTES, client_error, no_aws_call
from tests.support.http_app import Served, answer, serving, settings, with_http

LONG = {"Prefer": "wait=30"}
JSON_BODY = {"Content-Type": "application/json"}
JSON_NEEDED = "Content-Type: application/json"


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving() as running:
        yield running


async def post_and_complete(
    served: Served,
    path: str,
    status: Status = Status.SUCCEEDED,
    body: Any = None,
    **completion: Any,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST ``path``, then complete the execution it started with ``status``."""
    request = asyncio.ensure_future(served.client.post(path, json=body or {}, headers=LONG))
    txn_id = await served.executions.next_started()
    served.complete(txn_id, status, **completion)
    return await answer(await request)


# ---------------------------------------------------------------- POST /<route>


async def test_a_request_is_held_until_its_completion(served: Served) -> None:
    status, headers, body = await post_and_complete(
        served, "/hello", body={"name": "ada"}, output={"name": "ada", "done": True}
    )
    assert status == 200
    txn_id = body["transactionId"]
    assert is_txn_id(txn_id)
    assert served.executions.bodies[txn_id] == {"name": "ada"}
    assert body["executionArn"] == f"{ROUTES['hello'].state_machine}:{txn_id}".replace(
        ":stateMachine:", ":execution:"
    )
    assert (body["status"], body["output"], body["completedVia"]) == (
        "SUCCEEDED", {"name": "ada", "done": True}, "mqtt",
    )  # fmt: skip
    assert "processData" not in body and "error" not in body
    timings = body["timings"]
    assert timings["receivedAt"] <= timings["startedAt"] <= timings["notifiedAt"]
    assert timings["notifiedAt"] <= timings["answeredAt"]
    assert headers["Preference-Applied"] == "wait=30"
    assert served.app[REGISTRY].held == 0


async def test_a_sidecar_route_answers_with_its_process_data(served: Served) -> None:
    status, _, body = await post_and_complete(served, "/p1", body={"foo": "x"})
    assert status == 200
    assert body["processData"] == {"foo": "x", "step-a-output": "a"}
    served.executions.failures["GetObject"] = AwsError("GetObject", "NoSuchKey", "gone")
    status, _, body = await post_and_complete(served, "/p1")
    assert status == 200
    assert body["processData"] is None
    assert "NoSuchKey" in body["processDataError"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(Status.FAILED, 502), (Status.TIMED_OUT, 504), (Status.ABORTED, 409)],
)
async def test_each_final_status_has_its_code(served: Served, status: Status, code: int) -> None:
    got, _, body = await post_and_complete(
        served, "/hello", status, error="States.Failed", cause="it broke"
    )
    assert got == code
    assert body["status"] == str(status)
    assert (body["output"], body["error"], body["cause"]) == (None, "States.Failed", "it broke")


async def test_still_running_after_the_hold_is_202_with_its_location(served: Served) -> None:
    response = await served.client.post("/hello", json={}, headers={"Prefer": "wait=0.05"})
    status, headers, body = await answer(response)
    assert status == 202
    location = f"/executions/{body['transactionId']}"
    assert (headers["Location"], body["location"], body["status"]) == (
        location, location, "RUNNING",
    )  # fmt: skip
    assert int(headers["Retry-After"]) == 5
    assert headers["Preference-Applied"] == "wait=0.05"


@pytest.mark.parametrize(
    ("prefer", "applied"),
    [
        ("wait=0.05", "wait=0.05"),
        ('respond-async, WAIT = "0.05"', "respond-async, wait=0.05"),
        ("Respond-Async", "respond-async"),  # at once
        ("wait=5000", "wait=0.1"),  # capped by max_wait
        ("wait=soon", None),  # not understood: ignored, the default hold applies
    ],
)
async def test_prefer_wait(prefer: str, applied: str | None) -> None:
    async with serving(settings(default_wait=0.01, max_wait=0.1)) as served:
        response = await served.client.post("/hello", json={}, headers={"Prefer": prefer})
        status, headers, _ = await answer(response)
    assert status == 202
    assert headers.get("Preference-Applied") == applied


@pytest.mark.parametrize(
    ("request_kwargs", "code", "message"),
    [
        ({"data": b"{not json", "headers": JSON_BODY}, 400, "not JSON"),
        ({"data": b""}, 400, "not JSON"),
        ({"json": [1, 2]}, 400, "JSON object"),
        ({"json": {"x": "y" * 200}}, 413, "larger than 100 bytes"),
        # What a browser posts cross-site without asking first: never taken as JSON.
        ({"data": b'{"a": 1}', "headers": {"Content-Type": "text/plain"}}, 415, JSON_NEEDED),
        ({"data": {"a": "1"}}, 415, JSON_NEEDED),  # a form
        ({"data": b'{"a": 1}'}, 415, JSON_NEEDED),  # application/octet-stream
    ],
)
async def test_bad_bodies_are_refused_and_start_nothing(
    request_kwargs: dict[str, Any], code: int, message: str
) -> None:
    async with serving(settings(max_body_bytes=100)) as served:
        status, headers, body = await answer(await served.client.post("/hello", **request_kwargs))
        assert status == code
        assert headers["Content-Type"].startswith("application/json")
        assert message in body["message"]
        assert served.executions.started.empty()
        assert served.app[REGISTRY].held == 0


async def test_a_body_over_the_limit_is_refused_while_it_streams_in() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b'{"x": "' + b"y" * 20 + b'"}'

    async with serving(settings(max_body_bytes=100)) as served:
        response = await served.client.post("/hello", data=chunks(), headers=JSON_BODY)
        status, _, body = await answer(response)
        assert status == 413, body
        assert served.executions.started.empty()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"n": ' + b"9" * 4301 + b"}", "integer of more than 4300 digits"),
        (b'{"s": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"n": NaN}', "not a JSON number"),
        (b'{"n": 1e400}', "too large to be a float"),
    ],
    ids=["huge-integer", "lone-surrogate", "nan", "overflowing-float"],
)
@pytest.mark.parametrize("idempotency_key", [None, "parser"])
async def test_a_body_python_parses_but_json_does_not_allow_is_a_400(
    served: Served, data: bytes, message: str, idempotency_key: str | None
) -> None:
    headers = {**JSON_BODY, **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
    status, _, body = await answer(await served.client.post("/hello", data=data, headers=headers))
    assert status == 400, body
    assert message in body["message"]
    assert served.executions.started.empty() and not served.executions.objects


@pytest.mark.parametrize("levels", [65, 100_000])  # past the limit; past Python's own
async def test_a_deeply_nested_body_is_a_400(served: Served, levels: int) -> None:
    data = b'{"a": ' + b"[" * levels + b"]" * levels + b"}"
    status, _, body = await answer(await served.client.post("/hello", data=data, headers=JSON_BODY))
    assert status == 400, body
    assert "nested deeper than 64 levels" in body["message"]
    assert served.executions.started.empty()
    assert served.app[REGISTRY].held == 0


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [("POST", "/nowhere", 404), ("DELETE", "/hello", 405), ("GET", "/nowhere/else", 404)],
)
async def test_unknown_routes_and_methods_are_json_errors(
    served: Served, method: str, path: str, code: int
) -> None:
    status, headers, body = await answer(await served.client.request(method, path, json={}))
    assert status == code
    assert headers["Content-Type"].startswith("application/json")
    assert body["message"]
    if code == 405:
        assert headers["Allow"] == "GET,HEAD,POST"


async def test_an_aws_error_is_502_with_its_code_and_forgets_the_transaction(
    served: Served,
) -> None:
    served.executions.failures["StartExecution"] = AwsError(
        "StartExecution", "StateMachineDoesNotExist", "no such machine"
    )
    status, _, body = await answer(await served.client.post("/hello", json={}))
    assert status == 502
    assert body["awsErrorCode"] == "StateMachineDoesNotExist"
    assert "no such machine" in body["message"]
    assert served.app[REGISTRY].held == 0
    assert list(served.app[REGISTRY].unresolved()) == []


async def test_a_throttled_start_is_tried_again_and_answered(served: Served) -> None:
    served.executions.throttled_next["StartExecution"] = 3
    request = asyncio.ensure_future(served.client.post("/hello", json={}, headers=LONG))
    txn_id = await served.executions.next_started()
    served.complete(txn_id, output={"done": True})
    status, _, body = await answer(await request)
    assert (status, body["transactionId"], body["output"]) == (200, txn_id, {"done": True})
    assert served.executions.calls == ["StartExecution"] * 4
    assert served.executions.throttled == {"StartExecution": 3}


async def test_throttling_that_outlasts_the_wait_is_503_with_retry_after(served: Served) -> None:
    served.executions.throttled_next["StartExecution"] = 10**6
    status, headers, body = await answer(
        await served.client.post("/hello", json={}, headers={"Prefer": "wait=0.5"})
    )
    assert status == 503
    assert body["awsErrorCode"] == "ThrottlingException"
    assert headers["Retry-After"] == "5"
    assert served.executions.calls.count("StartExecution") > 1
    assert served.executions.elsewhere == {}  # nothing started
    assert served.app[REGISTRY].held == 0 and list(served.app[REGISTRY].unresolved()) == []


async def test_a_start_past_the_instances_share_of_starts_is_503_without_a_call(
    served: Served,
) -> None:
    served.executions.starts = StartPacer(0.25)  # one start at once, the next in 4 s
    first = asyncio.ensure_future(served.client.post("/hello", json={}, headers=LONG))
    served.complete(await served.executions.next_started())
    assert (await answer(await first))[0] == 200
    status, headers, body = await answer(
        await served.client.post("/hello", json={}, headers={"Prefer": "wait=0.5"})
    )
    assert (status, body["awsErrorCode"], headers["Retry-After"]) == (503, RATE_LIMITED, "5")
    assert served.executions.calls.count("StartExecution") == 1
    assert served.app[REGISTRY].held == 0 and list(served.app[REGISTRY].unresolved()) == []


async def test_a_start_throttled_after_it_took_effect_is_not_started_twice(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a throttled attempt have started the execution after all (and it ended at
    once), the next attempt's ExecutionAlreadyExists means started: the request is held
    for its completion, and there is one execution."""
    executions = served.executions
    start_execution = executions._start_execution
    attempts = 0

    async def took_effect_but_throttled(**params: Any) -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        answer = await start_execution(**params)
        if attempts == 1:
            executions.elsewhere[params["name"]]["status"] = "SUCCEEDED"
            raise client_error(AwsError("StartExecution", "ThrottlingException", "Rate"))
        return answer

    monkeypatch.setattr(executions, "_start_execution", took_effect_but_throttled)
    request = asyncio.ensure_future(served.client.post("/hello", json={}, headers=LONG))
    txn_id = await executions.next_started()
    await eventually(lambda: attempts == 2)
    served.complete(txn_id, output={"once": True})
    status, _, body = await answer(await request)
    assert (status, body["output"]) == (200, {"once": True})
    assert executions.started.empty() and list(executions.elsewhere) == [txn_id]


async def test_an_input_too_large_for_step_functions_is_413_before_any_aws_call(
    served: Served,
) -> None:
    # 100 kB of UTF-8, within the body limit (256 KiB), but each character is six bytes
    # of the execution's JSON input.
    body = json.dumps({"text": "\u00e9" * 50_000}, ensure_ascii=False).encode()
    post = functools.partial(served.client.post, data=body, headers={**JSON_BODY, **LONG})
    status, headers, answered = await answer(await post("/hello"))
    assert status == 413
    assert headers["Content-Type"].startswith("application/json")
    assert "262144" in answered["message"]
    assert served.executions.calls == [] and served.executions.objects == {}
    assert served.app[REGISTRY].held == 0 and len(served.app[REGISTRY]) == 0
    # A sidecar route's input names the stored body instead: it is started.
    request = asyncio.ensure_future(post("/p1"))
    txn_id = await served.executions.next_started()
    served.complete(txn_id)
    assert (await answer(await request))[0] == 200


async def test_too_many_held_requests_is_503_and_reattaches_have_their_own_budget() -> None:
    async with serving(settings(max_held=2, max_reattach_held=1)) as served:
        held = [
            asyncio.ensure_future(served.client.post("/hello", json={}, headers=LONG))
            for _ in range(2)
        ]
        first, second = [await served.executions.next_started() for _ in held]
        status, headers, body = await answer(await served.client.post("/hello", json={}))
        assert status == 503
        assert "too many held requests" in body["message"]
        assert headers["Retry-After"] == "5"
        # A re-attach is not kept out by the POSTs held...
        reattached = asyncio.ensure_future(
            served.client.get(f"/executions/{first}", params={"wait": "30"})
        )
        await eventually(lambda: served.app[REGISTRY].held_reattached == 1)
        # ...and re-attaches cannot hold more than their own budget.
        status, headers, body = await answer(await served.client.get(f"/executions/{second}"))
        assert (status, headers["Retry-After"]) == (503, "5")
        assert "re-attached" in body["message"]
        served.complete(first)
        served.complete(second)
        assert [(await answer(await r))[0] for r in [*held, reattached]] == [200, 200, 200]


async def test_a_client_that_goes_away_leaves_no_waiter(served: Served) -> None:
    with pytest.raises(TimeoutError):
        await served.client.post(
            "/hello", json={}, headers=LONG, timeout=aiohttp.ClientTimeout(total=0.2)
        )
    await eventually(lambda: served.app[REGISTRY].held == 0)


async def test_draining_refuses_new_requests_and_answers_held_ones_202(served: Served) -> None:
    held = asyncio.ensure_future(served.client.post("/hello", json={}, headers=LONG))
    txn_id = await served.executions.next_started()
    # What Daemon.drain does once the grace time is up.
    served.app[ADMISSION].accepting = False
    assert served.app[REGISTRY].release_all() == 1
    status, headers, body = await answer(await held)
    assert status == 202
    assert headers["Location"] == f"/executions/{txn_id}"
    status, headers, body = await answer(await served.client.post("/hello", json={}))
    assert status == 503
    assert body["message"] == "shutting down"
    assert headers["Retry-After"] == "5"


async def test_lines_about_a_request_carry_its_transaction(served: Served) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("notifier")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        status, _, body = await post_and_complete(served, "/hello")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert status == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    answered = [line for line in lines if line["message"] == "POST /hello: SUCCEEDED via mqtt"]
    assert len(answered) == 1
    assert answered[0]["txnId"] == body["transactionId"]
    assert answered[0]["executionArn"] == body["executionArn"]


# ---------------------------------------------------------------- Idempotency-Key


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": f'"{key}"', **LONG, **headers}


async def test_the_same_key_and_body_is_the_same_transaction(served: Served) -> None:
    first = asyncio.ensure_future(
        served.client.post("/hello", json={"n": 1, "m": 2}, headers=keyed("order-1"))
    )
    txn_id = await served.executions.next_started()
    assert txn_id == keyed_txn_id("hello", "order-1", None)
    # While it is held, and once it ended: the same transaction, started once.
    retry = asyncio.ensure_future(
        served.client.post("/hello", json={"m": 2, "n": 1}, headers=keyed("order-1"))
    )
    await eventually(lambda: served.app[REGISTRY].held == 2)
    served.complete(txn_id, output={"n": 1})
    for request in (first, retry):
        status, _, body = await answer(await request)
        assert (status, body["transactionId"], body["output"]) == (200, txn_id, {"n": 1})
    status, _, body = await answer(
        await served.client.post("/hello", json={"n": 1, "m": 2}, headers=keyed("order-1"))
    )
    assert (status, body["transactionId"], body["output"]) == (200, txn_id, {"n": 1})
    assert served.executions.started.qsize() == 0
    assert list(served.executions.objects) == [txn_id]


async def test_the_same_key_with_another_body_is_422_and_changes_nothing(served: Served) -> None:
    held = asyncio.ensure_future(served.client.post("/hello", json={"n": 1}, headers=keyed("k")))
    txn_id = await served.executions.next_started()
    status, _, body = await answer(
        await served.client.post("/hello", json={"n": 2}, headers=keyed("k"))
    )
    assert (status, body["transactionId"]) == (422, txn_id)
    assert "different request body" in body["message"]
    # Another instance, which never saw the first request, tells it from what is stored.
    async with serving() as other:
        other.executions.objects = served.executions.objects
        other.executions.elsewhere = served.executions.elsewhere
        status, _, body = await answer(
            await other.client.post("/hello", json={"n": 2}, headers=keyed("k"))
        )
        assert (status, body["transactionId"]) == (422, txn_id)
        assert other.app[REGISTRY].get(txn_id) is None
    assert served.executions.bodies == {txn_id: {"n": 1}}
    served.complete(txn_id)
    assert (await answer(await held))[0] == 200


async def test_a_retry_gets_its_answer_when_the_first_request_s_start_fails(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with the key at one instance: the first one's StartExecution fails, the
    retry's goes through; the retry is answered with the workflow's result, not left
    without a transaction."""
    executions = served.executions
    start_execution = executions._start_named
    first_call, fail_now = asyncio.Event(), asyncio.Event()

    async def first_fails(
        route: str, txn_id: str, body: dict[str, Any], owner: str | None, deadline: float
    ) -> None:
        if not first_call.is_set():
            first_call.set()
            await fail_now.wait()
            raise AwsError("StartExecution", "ServiceUnavailable", "try again")
        await start_execution(route, txn_id, body, owner, deadline)

    monkeypatch.setattr(executions, "_start_named", first_fails)
    first = asyncio.ensure_future(served.client.post("/hello", json={}, headers=keyed("k2")))
    await first_call.wait()
    retry = asyncio.ensure_future(served.client.post("/hello", json={}, headers=keyed("k2")))
    txn_id = await executions.next_started()
    fail_now.set()
    status, _, body = await answer(await first)
    assert (status, body["awsErrorCode"]) == (502, "ServiceUnavailable")
    served.complete(txn_id, output={"done": True})
    status, _, body = await answer(await retry)
    assert (status, body["transactionId"], body["output"]) == (200, txn_id, {"done": True})


async def test_a_retry_at_another_instance_attaches_to_the_execution(served: Served) -> None:
    """The instance that started it is gone: its executions go on, and a retry anywhere
    gets their answer without starting anything."""
    txn_id = keyed_txn_id("hello", "order-2", None)
    served.executions.objects[txn_id] = fingerprint({"n": 2})
    served.executions.ran_elsewhere(txn_id, Status.RUNNING, input='{"n": 2, "subtopic": "gone"}')
    retry = asyncio.ensure_future(
        served.client.post("/hello", json={"n": 2}, headers=keyed("order-2"))
    )
    await eventually(lambda: served.app[REGISTRY].held == 1)
    txn = served.app[REGISTRY].get(txn_id)
    assert txn is not None and txn.poll  # published to the other instance: polled here
    served.complete(txn_id, output={"n": 2})
    status, _, body = await answer(await retry)
    assert (status, body["transactionId"], body["output"]) == (200, txn_id, {"n": 2})
    assert served.executions.started.qsize() == 0
    # Ended meanwhile: the final answer at once.
    ended = keyed_txn_id("hello", "order-3", None)
    served.executions.objects[ended] = fingerprint({})
    served.executions.ran_elsewhere(
        ended, Status.FAILED, input='{"subtopic": "gone"}', error="E", cause="c"
    )
    status, _, body = await answer(
        await served.client.post("/hello", json={}, headers=keyed("order-3"))
    )
    assert (status, body["transactionId"], body["error"]) == (502, ended, "E")


async def test_a_key_whose_object_was_stored_but_nothing_started_starts_it(
    served: Served,
) -> None:
    """The instance that took the key died between storing the body and starting."""
    txn_id = keyed_txn_id("p1", "order-4", None)
    served.executions.objects[txn_id] = fingerprint({"x": 1})
    request = asyncio.ensure_future(
        served.client.post("/p1", json={"x": 1}, headers=keyed("order-4"))
    )
    assert await served.executions.next_started() == txn_id
    served.complete(txn_id)
    assert (await answer(await request))[0] == 200


async def test_an_execution_of_the_key_with_another_input_is_422(served: Served) -> None:
    """No fingerprint stored (the object expired): the execution's input tells."""
    txn_id = keyed_txn_id("hello", "order-5", None)
    served.executions.ran_elsewhere(txn_id, Status.SUCCEEDED, input='{"n": 1, "subtopic": "a"}')
    status, _, body = await answer(
        await served.client.post("/hello", json={"n": 9}, headers=keyed("order-5"))
    )
    assert (status, body["transactionId"]) == (422, txn_id)


@pytest.mark.parametrize(
    "value",
    ['""', "two words", '"' + "k" * 256 + '"', "k" * 256, '"unterminated', "caf\u00e9"],
)
async def test_a_malformed_or_over_long_key_is_400(served: Served, value: str) -> None:
    status, _, body = await answer(
        await served.client.post(
            "/hello", json={}, headers={"Idempotency-Key": value.encode().decode("unicode_escape")}
        )
    )
    assert status == 400
    assert "Idempotency-Key" in body["message"]
    assert served.executions.started.qsize() == 0 and not served.executions.objects


async def test_keys_are_each_api_key_s_own() -> None:
    ci, other = new_key(), new_key()
    names = {"ci": ci, "other": other}
    config = settings(api_keys={n: ApiKeySettings(sha256=hash_key(k)) for n, k in names.items()})
    async with serving(config) as served:
        started = []
        for key in (ci, other):
            request = asyncio.ensure_future(
                served.client.post("/hello", json={}, headers=keyed("same", **{"x-api-key": key}))
            )
            started.append(await served.executions.next_started())
            served.complete(started[-1])
            assert (await answer(await request))[0] == 200
        assert started == [
            keyed_txn_id("hello", "same", "ci"),
            keyed_txn_id("hello", "same", "other"),
        ]
        # Found by its key only with the API key that made it.
        for key, txn_id in zip((ci, other), started, strict=True):
            status, _, body = await answer(
                await served.client.get("/hello", headers=keyed("same", **{"x-api-key": key}))
            )
            assert (status, body["transactionId"]) == (200, txn_id)


async def test_respond_async_is_answered_at_once_with_the_location(served: Served) -> None:
    status, headers, body = await answer(
        await served.client.post(
            "/hello", json={}, headers={"Prefer": "respond-async", "Idempotency-Key": "a1"}
        )
    )
    assert (status, headers["Preference-Applied"]) == (202, "respond-async")
    assert headers["Location"] == f"/executions/{body['transactionId']}"
    assert served.executions.described == []  # no look at Step Functions kept it waiting


async def test_a_keyed_transaction_is_found_by_its_key(served: Served) -> None:
    status, _, body = await answer(await served.client.get("/hello", headers=keyed("nothing")))
    assert status == 404
    status, headers, body = await answer(await served.client.get("/hello"))
    assert (status, headers["Allow"]) == (405, "POST")
    status, _, started = await answer(
        await served.client.post("/hello", json={}, headers={**keyed("found"), "Prefer": "wait=0"})
    )
    assert status == 202
    found = asyncio.ensure_future(
        served.client.get("/hello?wait=30", headers={"Idempotency-Key": "found"})
    )
    await eventually(lambda: served.app[REGISTRY].held_reattached == 1)
    served.complete(started["transactionId"], output={"ok": True})
    status, _, body = await answer(await found)
    assert (status, body["transactionId"], body["output"]) == (
        200, started["transactionId"], {"ok": True},
    )  # fmt: skip


# ---------------------------------------------------------------- GET /executions/<txnId>


async def test_reattach_to_a_held_transaction_gets_its_answer(served: Served) -> None:
    response = await served.client.post("/hello", json={}, headers={"Prefer": "wait=0"})
    status, _, started = await answer(response)
    assert status == 202
    txn_id = started["transactionId"]
    reattached = asyncio.ensure_future(served.client.get(f"/executions/{txn_id}?wait=30"))
    await eventually(lambda: served.app[REGISTRY].held == 1)
    served.complete(txn_id, output={"ok": 1})
    status, _, body = await answer(await reattached)
    assert status == 200
    assert (body["output"], body["completedVia"]) == ({"ok": 1}, "mqtt")
    assert body["timings"]["startedAt"] == started["timings"]["startedAt"]


async def test_reattach_to_a_transaction_of_another_instance(served: Served) -> None:
    ended, running = new_txn_id(), new_txn_id()
    served.executions.ran_elsewhere(ended, Status.SUCCEEDED, output='{"answer": 42}', stopDate=None)
    served.executions.ran_elsewhere(running, Status.RUNNING)
    status, _, body = await answer(await served.client.get(f"/executions/{ended}?wait=0"))
    assert status == 200
    assert (body["output"], body["completedVia"]) == ({"answer": 42}, "poll")
    assert body["timings"]["startedAt"] is None
    status, headers, body = await answer(await served.client.get(f"/executions/{running}?wait=0"))
    assert status == 202
    assert headers["Location"] == f"/executions/{running}"
    # Its completions go to the other instance: this one polls it.
    txn = served.app[REGISTRY].get(running)
    assert txn is not None and txn.poll


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "inf"])
async def test_reattach_with_a_bad_wait_is_400(served: Served, wait: str) -> None:
    status, _, body = await answer(
        await served.client.get(f"/executions/{new_txn_id()}?wait={wait}")
    )
    assert status == 400
    assert "wait" in body["message"]


async def test_reattach_to_unknown_or_malformed_transactions_is_404(served: Served) -> None:
    for txn_id in (new_txn_id(), "not-an-id", "81ARZ3NDEKTSV4RRFFQ69G5FAV"):
        status, _, body = await answer(await served.client.get(f"/executions/{txn_id}?wait=0"))
        assert status == 404, txn_id
        assert txn_id in body["message"]


async def test_reattach_when_aws_fails_is_502(served: Served) -> None:
    served.executions.failures["HeadObject"] = AwsError("HeadObject", "AccessDenied", "no")
    status, _, body = await answer(await served.client.get(f"/executions/{new_txn_id()}"))
    assert status == 502
    assert body["awsErrorCode"] == "AccessDenied"


# ---------------------------------------------------------------- POST /executions/<txnId>/stop


async def test_stop_aborts_and_answers_held_requests_409(served: Served) -> None:
    held = asyncio.ensure_future(served.client.post("/hello", json={}, headers=LONG))
    txn_id = await served.executions.next_started()
    status, _, stopped = await answer(await served.client.post(f"/executions/{txn_id}/stop"))
    assert status == 200
    assert (stopped["transactionId"], stopped["status"]) == (txn_id, "ABORTED")
    assert served.executions.stopped == [stopped["executionArn"]]
    status, _, body = await answer(await held)
    assert status == 409
    assert (body["status"], body["completedVia"]) == ("ABORTED", "stop")
    status, _, again = await answer(await served.client.post(f"/executions/{txn_id}/stop"))
    assert status == 409
    assert (again["transactionId"], again["status"]) == (txn_id, "ABORTED")
    assert served.executions.stopped == [stopped["executionArn"]]


async def test_stop_of_another_instance_s_execution(served: Served) -> None:
    running, ended = new_txn_id(), new_txn_id()
    arn = served.executions.ran_elsewhere(running, Status.RUNNING)
    served.executions.ran_elsewhere(ended, Status.FAILED)
    status, _, _ = await answer(await served.client.post(f"/executions/{running}/stop"))
    assert status == 200
    assert served.executions.stopped == [arn]
    status, _, body = await answer(await served.client.post(f"/executions/{ended}/stop"))
    assert (status, body["status"]) == (409, "FAILED")


async def test_stop_of_nothing_is_404_and_an_aws_error_502(served: Served) -> None:
    for txn_id in (new_txn_id(), "not-an-id"):
        status, _, _ = await answer(await served.client.post(f"/executions/{txn_id}/stop"))
        assert status == 404, txn_id
    held = asyncio.ensure_future(served.client.post("/hello", json={}, headers=LONG))
    txn_id = await served.executions.next_started()
    served.executions.failures["StopExecution"] = AwsError(
        "StopExecution", "ExecutionDoesNotExist", "gone"
    )
    status, _, body = await answer(await served.client.post(f"/executions/{txn_id}/stop"))
    assert status == 404
    served.executions.failures["StopExecution"] = AwsError("StopExecution", "AccessDenied", "no")
    status, _, body = await answer(await served.client.post(f"/executions/{txn_id}/stop"))
    assert (status, body["awsErrorCode"]) == (502, "AccessDenied")
    served.complete(txn_id)
    assert (await answer(await held))[0] == 200


# ---------------------------------------------------------------- by execution ARN, listing


async def test_reattach_and_stop_by_execution_arn(served: Served) -> None:
    running = new_txn_id()
    arn = served.executions.ran_elsewhere(running, Status.RUNNING)
    status, _, body = await answer(await served.client.get(f"/executions/{arn}?wait=0"))
    assert (status, body["transactionId"], body["executionArn"]) == (202, running, arn)
    status, _, body = await answer(await served.client.post(f"/executions/{arn}/stop"))
    assert (status, body["transactionId"]) == (200, running)
    assert served.executions.stopped == [arn]
    foreign = arn.replace("notifier-test-Hello", "someone-else")
    for path in (f"/executions/{foreign}", f"/executions/{arn}x", f"/executions/{arn[:-1]}-"):
        status, _, body = await answer(await served.client.get(path))
        assert status == 404, path


async def test_describing_others_executions_draws_on_the_read_budget(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("notifier.requests.execution_reads.READ_PATIENCE", 0.05)
    served.executions.budget = ReadBudget(rate=0.01, burst=1)
    first, second = new_txn_id(), new_txn_id()
    for txn_id in (first, second):
        served.executions.ran_elsewhere(txn_id, Status.SUCCEEDED, output="{}")
    assert (await answer(await served.client.get(f"/executions/{first}")))[0] == 200
    status, headers, body = await answer(await served.client.get(f"/executions/{second}"))
    assert (status, headers["Retry-After"], body["awsErrorCode"]) == (503, "5", "RateLimited")
    assert served.executions.described == [served.executions.elsewhere[first]["executionArn"]]


async def test_listing_executions(served: Served) -> None:
    ids = [new_txn_id() for _ in range(3)]
    for txn_id, status in zip(ids, (Status.RUNNING, Status.SUCCEEDED, Status.RUNNING), strict=True):
        served.executions.ran_elsewhere(txn_id, status, stopDate=None)
    status, _, body = await answer(await served.client.get("/executions?limit=2"))
    assert status == 200
    assert [e["transactionId"] for e in body["executions"]] == ids[:2]
    assert body["executions"][0]["route"] == "hello"
    assert body["executions"][0]["startDate"] == "2026-01-01T00:00:00.000Z"
    status, _, rest = await answer(
        await served.client.get(
            "/executions", params={"limit": "2", "nextToken": body["nextToken"]}
        )
    )
    assert ([e["transactionId"] for e in rest["executions"]], rest["nextToken"]) == (ids[2:], None)
    status, _, running = await answer(
        await served.client.get("/executions?route=hello&status=RUNNING")
    )
    assert [e["transactionId"] for e in running["executions"]] == [ids[0], ids[2]]
    for query, code in [
        ("limit=0", 400), ("limit=1001", 400), ("limit=x", 400), ("status=DONE", 400),
        ("route=nowhere", 404),
    ]:  # fmt: skip
        status, _, body = await answer(await served.client.get(f"/executions?{query}"))
        assert status == code, query


async def test_listing_pages_through_every_route() -> None:
    """The real Executions.listing, one route after the other, on a ListExecutions that
    answers in pages of two."""
    pages = {
        "hello": [[{"name": "h1"}, {"name": "h2"}], [{"name": "h3"}]],
        "p1": [[{"name": "p1"}]],
    }

    class Sfn:
        async def list_executions(self, **kwargs: Any) -> dict[str, Any]:
            route = "hello" if kwargs["stateMachineArn"].endswith("Hello") else "p1"
            index = int(kwargs.get("nextToken", 0))
            items = pages[route][index][: kwargs["maxResults"]]
            more = index + 1 < len(pages[route])
            return {"executions": items, **({"nextToken": str(index + 1)} if more else {})}

    executions = Executions(
        None, Sfn(), "bucket", INSTANCE, lambda: ROUTES,
        put_object=no_aws_call, start_execution=no_aws_call,
    )  # fmt: skip
    seen, token = [], None
    while True:
        page = await executions.listing(["hello", "p1"], None, 2, token)
        seen.append([item["name"] for item in page.items])
        token = page.next_token
        if token is None:
            break
    assert seen == [["h1", "h2"], ["h3", "p1"]]
    with pytest.raises(InvalidPageTokenError):
        await executions.listing(["p1"], None, 2, "garbage")


# ---------------------------------------------------------------- who may call what


async def test_api_keys_guard_every_route_but_the_health_checks_and_the_page() -> None:
    key, slow = new_key(), new_key()
    config = settings(
        api_keys={
            "ci": ApiKeySettings(
                sha256=hash_key(key), rate=1000, burst=1000, roles=("approver", "admin")
            ),
            "slow": ApiKeySettings(sha256=hash_key(slow), rate=0.001, burst=2, roles=("admin",)),
        }
    )
    txn_id = new_txn_id()
    samples = {"route": "hello", "txnId": txn_id, "approvalId": "x", "executionId": txn_id}
    guarded = [
        (route.method, route.path.format(**samples))
        for route in routes.table(dashboard=True)
        if route.access not in (Access.OPEN, Access.OPTIONAL_KEY)
    ]
    assert ("GET", f"/executions/{txn_id}") in guarded
    links = ApprovalLinks(b"k" * 40, "https://notifier.example", 3600.0)
    async with serving(config, inbox=True, links=links) as served:
        assert served.inbox is not None
        served.inbox.add("x")  # an approval link is open to whoever holds a signed one
        samples["link"] = links.link("x", "approve").removeprefix(links.public_url)
        for method, path in guarded:
            for headers in ({}, {"x-api-key": key[::-1]}):
                response = await served.client.request(method, path, json={}, headers=headers)
                status, _, body = await answer(response)
                assert status == 401, (method, path, headers)
                assert "x-api-key" in body["message"]
        served_to_anyone = [
            samples["link"] if route.path.endswith("/link") else route.path.format(**samples)
            for route in routes.table(dashboard=True)
            if route.access in (Access.OPEN, Access.OPTIONAL_KEY)
        ]
        assert "/readyz" in served_to_anyone
        for path in [*served_to_anyone, "/dashboard/static/dashboard.js"]:
            async with served.client.get(path) as response:
                assert response.status == 200, path
        status, _, _ = await answer(
            await served.client.get("/approvals", headers={"x-api-key": key})
        )
        assert status == 200
        limited = {"x-api-key": slow}
        for _ in range(2):
            async with served.client.get("/metrics", headers=limited) as response:
                assert response.status == 200
        status, headers, body = await answer(
            await served.client.get("/openapi.json", headers=limited)
        )
        assert status == 429
        assert "slow" in body["message"]
        assert int(headers["Retry-After"]) >= 1


async def test_a_route_without_a_declared_access_stops_the_application_starting() -> None:
    app = http_app(settings(), INSTANCE, routes.API)

    async def undeclared(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/undeclared", undeclared)
    with pytest.raises(UndeclaredAccessError, match="GET /undeclared"):
        async with TestClient(TestServer(app)):
            pass


async def test_a_reload_puts_routes_limits_and_keys_in_force(served: Served) -> None:
    key = new_key()
    new = with_http(settings(api_keys={"ci": ApiKeySettings(sha256=hash_key(key))}), max_held=7)
    new = type(new)(**{**new.__dict__, "routes": {"hello": ROUTES["hello"]}})
    assert reload(served.app, new) == []
    assert served.app[REGISTRY].max_held == 7
    status, _, _ = await answer(await served.client.post("/hello", json={}))
    assert status == 401
    status, _, _ = await answer(
        await served.client.post("/p1", json={}, headers={"x-api-key": key})
    )
    assert status == 404  # the route is gone, for Executions too
    assert served.executions.routes.keys() == {"hello"}


# ---------------------------------------------------------------- other sites' pages

FOREIGN = "https://evil.example"


async def test_with_keys_off_a_page_of_another_site_starts_nothing(served: Served) -> None:
    # The form a foreign page can make any browser submit, and what its scripts may send.
    for request_kwargs in (
        {"data": b'{"a": 1}', "headers": {"Origin": FOREIGN, "Content-Type": "text/plain"}},
        {"json": {"a": 1}, "headers": {"Origin": FOREIGN}},
        {"json": {"a": 1}, "headers": {"Origin": "null"}},  # a sandboxed frame, a file
        {
            "json": {"a": 1},
            "headers": {
                "Origin": str(served.client.make_url("")).replace("127.0.0.1", "localhost")
            },
        },
    ):
        status, _, body = await answer(await served.client.post("/hello", **request_kwargs))
        assert status == 403, request_kwargs
        assert "another origin" in body["message"]
    for path in ("/approvals/x", "/executions/x/stop"):
        status, _, _ = await answer(await served.client.post(path, headers={"Origin": FOREIGN}))
        assert status == 403, path
    status, _, _ = await answer(await served.client.get("/approvals", headers={"Origin": FOREIGN}))
    assert status == 403
    assert served.executions.started.empty()


async def test_with_keys_off_the_daemons_own_page_and_clients_without_origin_are_served(
    served: Served,
) -> None:
    own = str(served.client.make_url("")).rstrip("/")
    for headers in ({"Origin": own, **LONG}, LONG):
        request = asyncio.ensure_future(
            served.client.post("/hello", json={"a": 1}, headers=headers)
        )
        served.complete(await served.executions.next_started())
        status, _, _ = await answer(await request)
        assert status == 200, headers


async def test_a_loopback_daemon_answers_to_loopback_names_only(served: Served) -> None:
    """A name re-pointed at 127.0.0.1 (DNS rebinding) makes the attacker's page the daemon's
    own origin; its Host still names the attacker's site."""
    port = served.client.port
    for host in (f"evil.example:{port}", f"10.0.0.1:{port}", "no host at all"):
        headers = {"Host": host, "Origin": f"http://{host}"}
        status, _, body = await answer(await served.client.post("/hello", json={}, headers=headers))
        assert status == 403, host
        assert "loopback name" in body["message"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        async with served.client.get("/healthz", headers={"Host": host}) as response:
            assert response.status == 200, host
    assert served.executions.started.empty()


async def test_with_keys_on_the_key_decides_not_the_origin() -> None:
    key = new_key()
    config = settings(api_keys={"ci": ApiKeySettings(sha256=hash_key(key), roles=("approver",))})
    async with serving(config) as served:
        foreign = {"Origin": FOREIGN, "Host": "notifier.example"}
        status, _, _ = await answer(await served.client.post("/hello", json={}, headers=foreign))
        assert status == 401
        status, _, _ = await answer(
            await served.client.get("/approvals", headers={**foreign, "x-api-key": key})
        )
        assert status == 200


async def test_every_answer_forbids_framing_and_sniffing(served: Served) -> None:
    for path in ("/", "/dashboard/static/dashboard.js", "/healthz", "/readyz", "/nowhere"):
        async with served.client.get(path) as response:
            policy = response.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in policy, path
            assert "default-src 'self'" in policy
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with served.client.get("/events") as response:  # a stream, prepared early
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# ---------------------------------------------------------------- operating endpoints


async def test_readyz_says_whether_aws_answers(served: Served) -> None:
    status, _, body = await answer(await served.client.get("/readyz"))
    assert status == 200
    assert (body["ready"], body["state"], body["instanceId"]) == (True, "ready", INSTANCE)
    assert (body["completion"], body["mqttConnected"], body["sqsQueue"]) == ("poll", None, None)
    served.executions.unreachable = "AccessDenied"
    status, _, body = await answer(await served.client.get("/readyz"))
    assert status == 200, "the answer of AWS is reused for a while"
    served.app[AWS_REACHABILITY].checked_at = -math.inf
    status, _, body = await answer(await served.client.get("/readyz"))
    assert status == 503
    assert (body["ready"], body["state"], body["awsError"]) == (False, "not ready", "AccessDenied")
    served.executions.unreachable = None
    served.app[AWS_REACHABILITY].checked_at = -math.inf
    served.app[ADMISSION].accepting = False
    status, _, body = await answer(await served.client.get("/readyz"))
    assert (status, body["accepting"]) == (503, False)


async def test_readyz_details_need_a_key_when_keys_are_required() -> None:
    key = new_key()
    async with serving(settings(api_keys={"ci": ApiKeySettings(sha256=hash_key(key))})) as served:
        served.executions.unreachable = "AccessDenied: arn:aws:iam::123456789012:role/secret"
        for headers in ({}, {"x-api-key": key[::-1]}):
            status, _, body = await answer(await served.client.get("/readyz", headers=headers))
            # A load balancer still learns whether to send traffic, and nothing else.
            assert (status, body) == (503, {"ready": False, "state": "not ready"}), headers
        status, _, body = await answer(
            await served.client.get("/readyz", headers={"x-api-key": key})
        )
        assert status == 503
        assert body["awsError"] == "AccessDenied: arn:aws:iam::123456789012:role/secret"
        assert {"sqsQueue", "instanceId", "held"} <= body.keys()


async def test_healthz_and_metrics(served: Served) -> None:
    status, _, body = await answer(await served.client.get("/healthz"))
    assert (status, body) == (200, {"status": "ok"})
    await post_and_complete(served, "/hello")
    async with served.client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert 'notifier_requests_total{route="hello",status="SUCCEEDED"} 1.0' in text
    assert 'notifier_completions_total{source="mqtt"} 1.0' in text
    assert "notifier_held_requests 0.0" in text
    # The same registry (the process's figures aside, which move between two readings).
    def own(rendered: str) -> list[str]:
        return [line for line in rendered.splitlines() if "notifier_" in line]

    assert own(served.app[METRICS].render().decode()) == own(text)


# ---------------------------------------------------------------- empty bodies, bare GETs


def with_route(config: Settings, route: str, **changes: Any) -> Settings:
    routes = {**config.routes, route: dataclasses.replace(config.routes[route], **changes)}
    return dataclasses.replace(config, routes=routes)


DEFAULT_INPUT = {"foo": "foo val", "bar": "bar val"}
NO_TYPE = ["Content-Type"]
"""What curl sends with ``-X POST`` and no body: aiohttp's client would add a type."""


async def test_an_empty_post_starts_the_route_with_its_default_input() -> None:
    async with serving(with_route(settings(), "p1", default_input=DEFAULT_INPUT)) as served:
        # What `curl -X POST .../p1` sends: no body, no Content-Type.
        request = asyncio.ensure_future(
            served.client.post("/p1", headers=LONG, skip_auto_headers=NO_TYPE)
        )
        txn_id = await served.executions.next_started()
        assert served.executions.bodies[txn_id] == DEFAULT_INPUT
        served.complete(txn_id)
        status, _, body = await answer(await request)
        assert (status, body["processData"]["foo"]) == (200, "foo val")


async def test_an_empty_post_without_a_default_input_or_with_a_type_is_400(
    served: Served,
) -> None:
    status, _, body = await answer(await served.client.post("/hello", skip_auto_headers=NO_TYPE))
    assert (status, "default_input" in body["message"]) == (400, True)
    status, _, body = await answer(await served.client.post("/hello", headers=JSON_BODY))
    assert (status, "not JSON" in body["message"]) == (400, True)
    assert served.executions.started.empty()


async def test_a_bare_get_of_a_route_is_405_showing_the_post_to_make() -> None:
    async with serving(with_route(settings(), "p1", default_input=DEFAULT_INPUT)) as served:
        status, headers, body = await answer(await served.client.get("/p1"))
        assert (status, headers["Allow"]) == (405, "POST")
        assert "curl -X POST http" in body["message"] and "/p1" in body["message"]
        assert body["start"] == {"method": "POST", "path": "/p1", "defaultInput": DEFAULT_INPUT}
        status, _, body = await answer(await served.client.get("/hello"))
        assert status == 405
        assert "content-type: application/json" in body["message"]
        assert served.executions.started.empty()


async def test_a_route_s_own_waits_and_body_limit() -> None:
    config = with_route(settings(), "hello", default_wait=0, max_wait=1, max_body_bytes=20)
    async with serving(config) as served:
        status, _, _ = await answer(await served.client.post("/hello", json={}))
        assert status == 202  # held for the route's default_wait, 0
        response = await served.client.post("/hello", json={}, headers={"Prefer": "wait=30"})
        status, headers, _ = await answer(response)
        assert (status, headers["Preference-Applied"]) == (202, "wait=1")
        status, _, body = await answer(await served.client.post("/hello", json={"x": "y" * 30}))
        assert (status, "larger than 20 bytes" in body["message"]) == (413, True)


async def test_start_roles_let_only_keys_with_one_of_them_start_the_route() -> None:
    operator, viewer = new_key(), new_key()
    keys = {
        "operator": ApiKeySettings(hash_key(operator), roles=("operator",)),
        "viewer": ApiKeySettings(hash_key(viewer)),
    }
    config = with_route(settings(api_keys=keys), "hello", start_roles=("operator", "admin"))
    async with serving(config) as served:
        response = await served.client.post("/hello", json={}, headers={"x-api-key": viewer})
        status, _, body = await answer(response)
        assert (status, "operator" in body["message"]) == (403, True)
        assert served.executions.started.empty()
        response = await served.client.post(
            "/hello", json={}, headers={"x-api-key": operator, "Prefer": "wait=0"}
        )
        assert (await answer(response))[0] == 202
        # Routes without start_roles: every key.
        response = await served.client.post(
            "/p1", json={}, headers={"x-api-key": viewer, "Prefer": "wait=0"}
        )
        assert (await answer(response))[0] == 202


# ---------------------------------------------------------------- Express workflows


EXPRESS = RouteSettings(f"{ROUTES['hello'].state_machine}Express", input="body", workflow="express")


def with_express(config: Settings) -> Settings:
    return dataclasses.replace(config, routes={**config.routes, "express": EXPRESS})


def sync_answer(txn_id: str, status: str = "SUCCEEDED", **fields: Any) -> dict[str, Any]:
    prefix = EXPRESS.state_machine.replace(":stateMachine:", ":express:")
    return {
        "executionArn": f"{prefix}:{txn_id}:0b6c1f6e-6bd8-4a57-9a1c-2b2f6d0c9d41",
        "status": status,
        **fields,
    }


async def test_an_express_route_is_answered_by_its_start_sync_execution() -> None:
    async with serving(with_express(settings())) as served:
        request = asyncio.ensure_future(
            served.client.post("/express", json={"who": "x"}, headers=LONG)
        )
        txn_id = await served.executions.next_started()
        assert served.executions.bodies[txn_id] == {"who": "x"}
        answer = sync_answer(txn_id, output='{"who": "x", "done": true}')
        served.executions.sync_answers[txn_id].set_result(answer)
        status, _, body = await answer_of(request)
        assert status == 200, body
        assert (body["completedVia"], body["output"]) == ("sync", {"who": "x", "done": True})
        assert body["executionArn"] == answer["executionArn"]
        assert served.executions.described == []  # Express has no DescribeExecution


async def test_an_express_run_s_mqtt_message_answers_only_when_its_call_fails() -> None:
    async with serving(with_express(settings())) as served:
        request = asyncio.ensure_future(served.client.post("/express", json={}, headers=LONG))
        txn_id = await served.executions.next_started()
        registry = served.app[REGISTRY]
        txn = registry.get(txn_id)
        arn = sync_answer(txn_id)["executionArn"]
        # Another execution of the same name is not this one's.
        other = arn.replace(txn_id, f"{txn_id}x")
        assert not registry.resolve(
            txn_id, Completion(Status.SUCCEEDED, "mqtt", execution_arn=other)
        )
        # The workflow's own message, a moment before its call returns: held back.
        mqtt = Completion(Status.SUCCEEDED, "mqtt", execution_arn=arn, output={"via": "mqtt"})
        assert not registry.resolve(txn_id, mqtt)
        assert txn.completion is None and not request.done()
        # The call is cut: the message it held back answers.
        served.executions.sync_answers[txn_id].set_exception(
            AwsError("StartSyncExecution", "ReadTimeoutError", "no answer")
        )
        status, _, body = await answer_of(request)
        assert (status, body["completedVia"], body["output"]) == (200, "mqtt", {"via": "mqtt"})


async def test_an_express_start_that_fails_at_once_is_an_aws_error_and_holds_nothing() -> None:
    async with serving(with_express(settings())) as served:
        served.executions.failures["StartSyncExecution"] = AwsError(
            "StartSyncExecution", "StateMachineDoesNotExist", "gone"
        )
        status, _, body = await answer(await served.client.post("/express", json={}, headers=LONG))
        assert (status, body["awsErrorCode"]) == (502, "StateMachineDoesNotExist")
        assert served.app[REGISTRY].held == 0
        assert len(served.app[REGISTRY]) == 0


async def test_an_express_execution_cannot_be_stopped_or_listed() -> None:
    async with serving(with_express(settings())) as served:
        response = await served.client.post("/express", json={}, headers={"Prefer": "wait=0"})
        status, _, started = await answer(response)
        assert status == 202
        status, _, body = await answer(
            await served.client.post(f"/executions/{started['transactionId']}/stop")
        )
        assert (status, "Express" in body["message"]) == (409, True)
        status, _, _ = await answer(await served.client.get("/executions?route=express"))
        assert status == 400


async def answer_of(
    request: asyncio.Future[aiohttp.ClientResponse],
) -> tuple[int, dict[str, str], dict[str, Any]]:
    return await answer(await request)


# ---------------------------------------------------------------- redrive


async def test_a_redrive_pending_is_said_so_not_running(served: Served) -> None:
    txn_id = new_txn_id()
    served.executions.ran_elsewhere(txn_id, Status.PENDING_REDRIVE)
    status, _, body = await answer(await served.client.get(f"/executions/{txn_id}?wait=0"))
    assert (status, body["status"]) == (202, "PENDING_REDRIVE")


async def test_a_redrive_of_another_instance_s_failure_is_followed(served: Served) -> None:
    txn_id = new_txn_id()
    served.executions.ran_elsewhere(txn_id, Status.FAILED, error="E", cause="C")
    status, _, body = await answer(await served.client.get(f"/executions/{txn_id}?wait=0"))
    assert (status, body["status"]) == (502, "FAILED")  # and remembered
    status, headers, body = await answer(await served.client.post(f"/executions/{txn_id}/redrive"))
    assert (status, headers["Location"], body["status"]) == (
        202,
        f"/executions/{txn_id}",
        "RUNNING",
    )
    status, _, body = await answer(await served.client.get(f"/executions/{txn_id}?wait=0"))
    assert (status, body["status"]) == (202, "RUNNING")  # not the failure it remembered
    status, _, body = await answer(await served.client.post(f"/executions/{txn_id}/redrive"))
    assert status == 409, body


# ---------------------------------------------------------------- history


async def test_an_execution_s_history_is_paged(served: Served) -> None:
    txn_id = new_txn_id()
    served.executions.ran_elsewhere(txn_id, Status.SUCCEEDED)
    status, _, page = await answer(await served.client.get(f"/executions/{txn_id}/history?limit=1"))
    assert status == 200, page
    assert [event["type"] for event in page["events"]] == ["ExecutionStarted"]
    token = page["nextToken"]
    status, _, page = await answer(
        await served.client.get(f"/executions/{txn_id}/history", params={"nextToken": token})
    )
    assert [event["type"] for event in page["events"]] == ["ExecutionSucceeded"]
    assert page["nextToken"] is None
    for query, code in [("?nextToken=bad", 400), ("?limit=1001", 400)]:
        status, _, _ = await answer(await served.client.get(f"/executions/{txn_id}/history{query}"))
        assert status == code
    status, _, _ = await answer(await served.client.get(f"/executions/{new_txn_id()}/history"))
    assert status == 404
