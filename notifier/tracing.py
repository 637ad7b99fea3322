"""Optional OpenTelemetry traces of each request: its span, the AWS calls that start its
execution (the fast path's included), the hold, and the completion with the path it came by.

Off by default, and then nothing is imported and every hook is a shared no-op context. On
(``[tracing] enabled``, with the ``otel`` extra), spans go to an OTLP/HTTP collector set by
the standard ``OTEL_EXPORTER_OTLP_*`` environment variables. A request that carries a W3C
``traceparent`` joins its client's trace, and the execution's input carries the context on
(:data:`TRACE_CONTEXT_KEY`), so the workflow's own steps can join it too.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from notifier import __version__

TRACE_CONTEXT_KEY = "traceContext"
"""The key of the execution input that carries the trace context (``traceparent``, and
``tracestate`` when there is one), only while tracing is on."""
OTEL_EXTRA = "pip install 'notifier[otel]'"

_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


@dataclass(frozen=True)
class TracingSettings:
    enabled: bool = False
    """Send OpenTelemetry spans (needs the ``otel`` extra); where to is set by the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4318``)."""
    service_name: str = "notifier"
    """The ``service.name`` of the spans."""


def otel_missing() -> bool:
    return importlib.util.find_spec("opentelemetry.sdk") is None


class Tracing:
    """Spans of the daemon's work, or nothing when made without a tracer provider."""

    def __init__(self, provider: Any | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("notifier", __version__) if provider else None

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracing:
        """Off, or spans batched to the OTLP/HTTP exporter the environment configures."""
        if not settings.enabled:
            return cls()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource({"service.name": settings.service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def span(
        self, name: str, attributes: Mapping[str, str | int | bool] | None = None
    ) -> AbstractContextManager[Any]:
        """A span, current within the ``with`` block (its value; None when off)."""
        if self._tracer is None:
            return _NO_SPAN
        span: AbstractContextManager[Any] = self._tracer.start_as_current_span(
            name, attributes=attributes
        )
        return span

    @contextlib.contextmanager
    def server_span(
        self, name: str, headers: Mapping[str, str], attributes: Mapping[str, str]
    ) -> Iterator[Any]:
        """The span of a request received, in the trace its ``traceparent`` names, if any."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import propagate, trace

        parent = propagate.extract(headers)
        with self._tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    def carrier(self) -> dict[str, str]:
        """The current trace context as W3C headers (empty when off or outside a span)."""
        if self._tracer is None:
            return {}
        from opentelemetry import propagate

        headers: dict[str, str] = {}
        propagate.inject(headers)
        return headers

    def shutdown(self) -> None:
        """Send what is still batched."""
        if self._provider is not None:
            self._provider.shutdown()
