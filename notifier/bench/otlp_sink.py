"""A stand-in for an OpenTelemetry collector, for ``notifier bench --tracing``: it takes the
daemon's OTLP/HTTP span exports on loopback and counts them, so that what tracing costs the
daemon is measured with its spans really made, batched, encoded and sent."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web


class OtlpSink:
    """``async with OtlpSink() as sink``: ``sink.url`` is the endpoint to export to
    (``OTEL_EXPORTER_OTLP_ENDPOINT``); ``exports`` and ``received_bytes`` count what came."""

    def __init__(self) -> None:
        self.exports = 0
        self.received_bytes = 0
        self.url = ""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)

    async def __aenter__(self) -> OtlpSink:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        self.received_bytes += len(await request.read())
        self.exports += 1
        # An empty ExportTraceServiceResponse: everything was accepted.
        return web.Response(body=b"", content_type="application/x-protobuf")
