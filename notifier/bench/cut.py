"""``notifier bench --cut SECONDS``: the fallbacks while the daemon's MQTT link is cut.

A daemon reaches the broker through a :class:`~notifier.bench.link.CuttableLink`. It holds
``requests`` Hello requests (each workflow waiting ``wait`` seconds); once all have started,
the link is cut as a firewall rejecting with TCP resets would cut it, for ``cut`` seconds,
while the workflows end. Each answer is timed from its workflow's end (its completion
reaching the broker, as in the other runs) to the answer read by the client, and grouped by
the path that completed it. After the link returns, Hello requests are sent one after
another until MQTT completes them again, and a few more to see that it goes on doing so;
the run reports how long after the link returned MQTT was connected and delivering, and the
DescribeExecution calls made from then on (0 when MQTT delivers everything).

It runs twice: with the instance's completion queue, and without it (DescribeExecution
sweeps only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import aiohttp

from notifier.bench import load
from notifier.bench.daemon_process import DaemonProcess, api_calls
from notifier.bench.link import CuttableLink
from notifier.bench.report import CutResult
from notifier.config import Settings, SqsSettings

if TYPE_CHECKING:  # the local extra, imported once a run starts
    from notifier.local.stack import LocalStack

VARIANTS = ("queue", "sweeps")
HOLD = 120.0
WARMUP = 3
PROBES_AFTER = 10
"""Requests sent after MQTT delivers again, each expected to come via MQTT."""
PROBE_TIMEOUT = 120.0
START_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True)
class CutOptions:
    cut: float = 45.0
    requests: int = 100
    wait: int = 8
    variants: tuple[str, ...] = VARIANTS


async def run_cut(
    stack: LocalStack,
    options: CutOptions,
    settings_for: Callable[[str], Settings],
    stopped_at: Callable[[str], float | None],
    logs: Path,
) -> list[CutResult]:
    """Each variant in turn; ``settings_for(variant)`` makes a daemon's settings, whose MQTT
    then goes through the cuttable link to the broker's port they name, and
    ``stopped_at(txn_id)`` tells when a workflow's completion reached the broker."""
    results = []
    for variant in options.variants:
        print(
            f"cut, {variant}: {options.requests} held, Hello waits {options.wait} s, "
            f"MQTT link cut for {options.cut:g} s...",
            flush=True,
        )
        with (logs / f"daemon-cut-{variant}.log").open("ab") as log:
            settings = settings_for(variant)
            assert settings.mqtt.port is not None
            async with CuttableLink(stack.settings.host, settings.mqtt.port) as link:
                mqtt = dataclasses.replace(settings.mqtt, port=link.port)
                settings = dataclasses.replace(settings, mqtt=mqtt)
                if variant == "sweeps":
                    settings = dataclasses.replace(settings, sqs=SqsSettings())
                results.append(await _run(variant, settings, link, options, log, stopped_at))
    return results


async def _run(
    variant: str,
    settings: Settings,
    link: CuttableLink,
    options: CutOptions,
    log: IO[bytes],
    stopped_at: Callable[[str], float | None],
) -> CutResult:
    async with DaemonProcess(settings, log) as daemon, load.client(options.requests) as http:
        await load.closed_loop(
            http, daemon.url, requests=WARMUP, concurrency=WARMUP, wait=0, hold=HOLD,
            first_index=-WARMUP,
        )  # fmt: skip
        started_before = await _calls(http, daemon.url, "StartExecution")
        requests = [
            asyncio.ensure_future(load.send(http, daemon.url, index, options.wait, HOLD))
            for index in range(options.requests)
        ]
        await _until(
            lambda: _calls(http, daemon.url, "StartExecution"),
            started_before + options.requests,
            START_TIMEOUT,
        )
        link.cut()
        cut_at = time.time()
        noticed = asyncio.ensure_future(_mqtt_connected_is(False, http, daemon.url, cut_at))
        samples = await asyncio.gather(*requests)
        down_after = await noticed
        answered_at = time.time()
        await asyncio.sleep(max(0.0, cut_at + options.cut - time.time()))
        link.restore()
        restored_at = time.time()
        connected_after = await _mqtt_connected_is(True, http, daemon.url, restored_at)
        describes_before = await _calls(http, daemon.url, "DescribeExecution")
        delivering_after, probes = await _probe(http, daemon.url, stopped_at, restored_at)
        describes = await _calls(http, daemon.url, "DescribeExecution") - describes_before
        metrics = await _metrics(http, daemon.url)
    by_path: dict[str, list[float]] = {}
    for sample in samples:
        stop = stopped_at(sample.txn_id) if sample.ok and sample.txn_id else None
        if stop is not None and sample.via is not None:
            by_path.setdefault(sample.via, []).append((sample.received_at - stop) * 1000)
    return CutResult(
        variant=variant,
        requests=options.requests,
        ok=sum(s.ok for s in samples),
        cut_s=options.cut,
        latencies_by_path_ms=by_path,
        answered_during_cut=answered_at - cut_at < options.cut,
        mqtt_down_after_s=down_after,
        ended_after_cut_s=_spread(samples, stopped_at, cut_at),
        mqtt_connected_after_s=connected_after,
        mqtt_delivering_after_s=delivering_after,
        probes_via_mqtt=sum(p.via == "mqtt" for p in probes[-PROBES_AFTER:]),
        probes=min(len(probes), PROBES_AFTER),
        describes_after=describes,
        mqtt_missed=int(metrics.get("notifier_mqtt_missed_total", 0)),
        errors=[s.error for s in samples if s.error][:5],
    )


async def _mqtt_connected_is(
    value: bool, http: aiohttp.ClientSession, url: str, since: float
) -> float | None:
    """Seconds from ``since`` until the daemon says MQTT's ``connected`` is ``value``
    (read from ``/metrics``, which asks nothing of AWS, unlike ``/readyz``)."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    while time.monotonic() < deadline:
        if (await _metrics(http, url)).get("notifier_mqtt_connected") == float(value):
            return time.time() - since
        await asyncio.sleep(0.05)
    return None


async def _probe(
    http: aiohttp.ClientSession,
    url: str,
    stopped_at: Callable[[str], float | None],
    since: float,
) -> tuple[float | None, list[load.Sample]]:
    """Hello requests one after another until one comes via MQTT, then ``PROBES_AFTER``
    more. Returns how long after ``since`` the first one delivered by MQTT ended (None if
    none was), and the requests from that one on."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    index = 1_000_000
    while time.monotonic() < deadline:
        index += 1
        sample = await load.send(http, url, index, 0, HOLD)
        if sample.via != "mqtt" or sample.txn_id is None:
            continue
        stop = stopped_at(sample.txn_id) or sample.received_at
        probes = [sample]
        for more in range(PROBES_AFTER - 1):
            probes.append(await load.send(http, url, index + 1 + more, 0, HOLD))
        return stop - since, probes
    return None, []


def _spread(
    samples: list[load.Sample], stopped_at: Callable[[str], float | None], cut_at: float
) -> tuple[float, float] | None:
    """When the first and the last workflow ended, in seconds after the cut."""
    stops = [stopped_at(s.txn_id) for s in samples if s.txn_id]
    ends = [stop - cut_at for stop in stops if stop is not None]
    return (min(ends), max(ends)) if ends else None


async def _until(value: Callable[[], Awaitable[int]], target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    current = await value()
    while current < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {current} of {target} started in {timeout:g} s")
        await asyncio.sleep(0.1)
        current = await value()


async def _metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


async def _calls(http: aiohttp.ClientSession, url: str, operation: str) -> int:
    async with http.get(f"{url}/metrics") as response:
        return api_calls(await response.text()).get(operation, 0)
