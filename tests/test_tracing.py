"""Traces of a request, checked with the OpenTelemetry SDK's in-memory exporter: the request's
span in its client's trace, its AWS calls (made by the fast path), the hold and the path its
completion came by, and the trace context in the execution's input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from notifier.app.state import EXECUTIONS, TRACING
from notifier.daemon import Daemon
from notifier.local.stack import LocalStack
from notifier.tracing import TRACE_CONTEXT_KEY, Tracing
from tests.support.daemons import DaemonFactory, settings_for
from tests.support.eventually import eventually

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    yield spans
    spans.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def test_a_request_its_aws_calls_its_hold_and_completion_are_one_trace(
    stack: LocalStack, http: aiohttp.ClientSession, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Daemon(settings_for(stack), tracing=Tracing(provider)) as daemon:
        async with http.post(
            f"{daemon.url}/p1", json={"n": 1}, headers={"traceparent": TRACEPARENT}
        ) as response:
            assert response.status == 200
            answer = await response.json()
        await eventually(lambda: "POST /{route}" in by_name(exporter.get_finished_spans()))
        description = await daemon.app[EXECUTIONS].describe(answer["executionArn"])
    spans = by_name(exporter.get_finished_spans())
    request = spans["POST /{route}"]
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
    assert request.context is not None and f"{request.context.trace_id:032x}" == CLIENT_TRACE
    for name in ("S3 PutObject", "StepFunctions StartExecution", "hold"):
        span = spans[name]
        assert span.context is not None and span.context.trace_id == request.context.trace_id
        assert span.parent is not None and span.parent.span_id == request.context.span_id
    for name in ("S3 PutObject", "StepFunctions StartExecution"):
        assert spans[name].attributes == {"notifier.fast_path": True}
    hold = spans["hold"].attributes
    assert hold is not None
    assert hold["notifier.completed_via"] == answer["completedVia"] == "mqtt"
    assert hold["notifier.status"] == "SUCCEEDED"
    assert hold["notifier.txn_id"] == answer["executionArn"].rsplit(":", 1)[1]  # its name
    carried = json.loads(description["input"])[TRACE_CONTEXT_KEY]
    start = spans["StepFunctions StartExecution"].context
    assert start is not None
    assert carried == {"traceparent": f"00-{CLIENT_TRACE}-{start.span_id:016x}-01"}


async def test_off_by_default_no_middleware_and_no_trace_context_in_the_input(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as daemon:
        assert not daemon.app[TRACING].enabled
        assert all(m.__name__ != "traced" for m in daemon.app.middlewares)  # type: ignore[attr-defined]
        async with http.post(f"{daemon.url}/hello", json={"n": 1}) as response:
            answer = await response.json()
        description = await daemon.app[EXECUTIONS].describe(answer["executionArn"])
    assert TRACE_CONTEXT_KEY not in json.loads(description["input"])
