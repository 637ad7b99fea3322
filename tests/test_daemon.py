"""A daemon that stops while holding requests loses their connections, nothing else: the
executions run on, their process data stays, and any instance answers a re-attach."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.daemons import DaemonFactory, call
from tests.support.eventually import eventually


async def test_requests_held_by_a_stopped_daemon_are_answered_by_another(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as first:
        held = asyncio.gather(
            *(
                call(http, "POST", f"{first.url}/p1", json={"n": n}, headers={"Prefer": "wait=60"})
                for n in range(3)
            )
        )
        await eventually(lambda: first.registry.held == 3)
        await eventually(lambda: all(t.started_at for t in first.registry.unresolved()))
        await first.drain(0)  # as on SIGTERM: what is still held is answered 202
        answers = await held
    assert [status for status, _, _ in answers] == [202] * 3
    async with daemon_factory() as second:
        for _, headers, _ in answers:
            status, _, final = await call(http, "GET", f"{second.url}{headers['Location']}?wait=60")
            assert status == 200, final
            assert final["status"] == "SUCCEEDED"
            assert "step-f-output" in final["processData"]
