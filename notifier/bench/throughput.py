"""``notifier bench --throughput``: how many executions a second the local stack runs.

Each workflow is driven as a user drives it: ``POST /<route>`` to a daemon, the request held
until the workflow's completion arrives. The local stack's moto really executes every state
of it (Lambda tasks in their worker processes, S3 and the IoT publish), so what limits the
rate is the stack, not the daemon; the CPU each part used per execution (from ``/proc``) says
which. ``requests`` requests go out from ``concurrency`` clients at once, each sending its
next as soon as it has its answer: with as many requests as clients, one burst.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import aiohttp

from notifier.bench import load, report
from notifier.bench.daemon_process import DaemonProcess
from notifier.config import Settings
from notifier.local.sfn_standin import HELLO_RESULT

if TYPE_CHECKING:  # the local extra, imported once a run starts
    from notifier.local.stack import LocalStack


@dataclass(frozen=True)
class Workload:
    """One route's load: its workflow, default size, what it sends and what a right answer is."""

    route: str
    workflow: str
    requests: int
    concurrency: int
    body: Callable[[int], dict[str, Any]]
    correct: Callable[[int, dict[str, Any]], bool]


def _process_a_body(index: int) -> dict[str, Any]:
    return {"foo": f"throughput {index}"}


def _process_a_correct(index: int, answer: dict[str, Any]) -> bool:
    data = answer.get("processData")
    return (
        isinstance(data, dict)
        and data.get("foo") == f"throughput {index}"
        and all(f"step-{step}-output" in data for step in "abcdef")
    )


def _hello_body(index: int) -> dict[str, Any]:
    return {"benchId": index}


def _hello_correct(index: int, answer: dict[str, Any]) -> bool:
    output = answer.get("output")
    return (
        isinstance(output, dict)
        and output.get("benchId") == index
        and output.get("taskresult") == HELLO_RESULT
    )


WORKLOADS = {
    "p1": Workload("p1", "ProcessA", 50, 50, _process_a_body, _process_a_correct),
    "hello": Workload("hello", "Hello", 100, 50, _hello_body, _hello_correct),
}
HOLD = 120.0
"""Seconds a request may be held: long enough that a slow stack shows as time, not as 202."""
SETTLE_INTERVAL = 0.5
SETTLE_MAX_SECONDS = 30.0
IDLE_SHARE = 0.1
"""Below this share of a core the stack counts as idle (its own timers and long polls)."""


def parse_routes(text: str) -> tuple[Workload, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(n not in WORKLOADS for n in names) or len(set(names)) != len(names):
        raise ValueError(f"--routes {text!r}: a comma-separated list of {', '.join(WORKLOADS)}")
    return tuple(WORKLOADS[name] for name in names)


@dataclass(frozen=True)
class Answer:
    status: int
    """HTTP status, 0 when no answer came."""
    correct: bool
    seconds: float
    """From sending the request to having read the whole answer."""
    error: str | None = None


@dataclass(kw_only=True)
class ThroughputResult:
    route: str
    workflow: str
    requests: int
    concurrency: int
    elapsed_s: float
    answers: list[Answer]
    cpu_s: dict[str, float]
    """CPU seconds the run cost, by part: ``endpoint``, ``lambda``, ``daemon``, ``bench``."""
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        seconds = [a.seconds * 1000 for a in self.answers]
        statuses = Counter(str(a.status) for a in self.answers)
        ok = sum(a.correct for a in self.answers)
        return {
            "workflow": self.workflow,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "ok": ok,
            "statuses": dict(sorted(statuses.items())),
            "elapsed_s": round(self.elapsed_s, 2),
            "executions_per_s": round(ok / self.elapsed_s, 2) if self.elapsed_s else None,
            "p50_ms": _round(report.percentile(seconds, 50)),
            "p95_ms": _round(report.percentile(seconds, 95)),
            "max_ms": _round(max(seconds) if seconds else None),
            "cpu_ms_per_execution": {
                part: round(1000 * cpu / self.requests, 1) for part, cpu in self.cpu_s.items()
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class StackCpu:
    """CPU time of the local AWS endpoint process and of its Lambda workers, from /proc."""

    def __init__(self, endpoint_pid: int) -> None:
        self._endpoint_pid = endpoint_pid

    def seconds(self) -> dict[str, float]:
        """``endpoint``: the endpoint process's own threads; ``lambda``: every process below
        it (the Lambda workers and the server that forks them), running or reaped."""
        stats = _all_stats()
        own = _ticks(stats[self._endpoint_pid], _OWN_CPU)
        reaped = _ticks(stats[self._endpoint_pid], _CHILDREN_CPU)
        children: dict[int, list[int]] = {}
        for pid, fields in stats.items():
            children.setdefault(int(fields[_PARENT]), []).append(pid)
        pending = list(children.get(self._endpoint_pid, []))
        while pending:
            pid = pending.pop()
            reaped += _ticks(stats[pid], _OWN_CPU + _CHILDREN_CPU)
            pending.extend(children.get(pid, []))
        tick = os.sysconf("SC_CLK_TCK")
        return {"endpoint": own / tick, "lambda": reaped / tick}

    async def settled(self) -> None:
        """Once the stack has finished what the last answers left running (Downstream, the
        status forwarder): until it uses under a tenth of a core, for at most a while."""
        deadline = time.monotonic() + SETTLE_MAX_SECONDS
        last = sum(self.seconds().values())
        while time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_INTERVAL)
            now = sum(self.seconds().values())
            if now - last < IDLE_SHARE * SETTLE_INTERVAL:
                return
            last = now


def _own_cpu() -> float:
    """This process's CPU time: the MQTT broker's and the load's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Indexes into /proc/<pid>/stat after the command name: field N of proc(5) is at N - 3.
_PARENT = 1
_OWN_CPU = (11, 12)  # utime, stime
_CHILDREN_CPU = (13, 14)  # cutime, cstime: children waited for


def _ticks(fields: list[str], indexes: tuple[int, ...]) -> int:
    return sum(int(fields[i]) for i in indexes)


def _all_stats() -> dict[int, list[str]]:
    """/proc/<pid>/stat of every process, from field 3 on."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            stats[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()
    return stats


async def send(http: aiohttp.ClientSession, url: str, workload: Workload, index: int) -> Answer:
    began = time.perf_counter()
    headers = {"Prefer": f"wait={HOLD:g}"}
    try:
        async with http.post(
            f"{url}/{workload.route}", json=workload.body(index), headers=headers
        ) as response:
            status = response.status
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Answer(0, False, time.perf_counter() - began, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - began
    if not isinstance(answer, dict):
        return Answer(status, False, seconds, "the answer is not a JSON object")
    correct = (
        status == 200 and answer.get("status") == "SUCCEEDED" and workload.correct(index, answer)
    )
    error = None if correct else f"{status} {answer.get('status') or answer.get('message')}"
    return Answer(status, correct, seconds, error)


async def drive(
    http: aiohttp.ClientSession,
    url: str,
    workload: Workload,
    *,
    requests: int,
    concurrency: int,
    first_index: int = 0,
) -> list[Answer]:
    """``requests`` requests from ``concurrency`` clients, all starting at once."""
    indexes = iter(range(first_index, first_index + requests))
    answers: list[Answer] = []

    async def one_client() -> None:
        for index in indexes:
            answers.append(await send(http, url, workload, index))

    await asyncio.gather(*(one_client() for _ in range(min(concurrency, requests))))
    return answers


async def measure(
    stack: LocalStack,
    workloads: Sequence[Workload],
    daemon_settings: Settings,
    log: IO[bytes],
    *,
    requests: int | None,
    concurrency: int | None,
    warmup: int,
    progress: bool = False,
) -> list[ThroughputResult]:
    """Each workload in turn through one daemon; ``requests``/``concurrency`` override each
    workload's own size; ``warmup`` requests per route go first, all at once, unmeasured."""
    assert stack.endpoint is not None
    cpu = StackCpu(stack.endpoint.pid)
    results = []
    widest = max(concurrency or w.concurrency for w in workloads)
    async with DaemonProcess(daemon_settings, log) as daemon, load.client(widest) as http:
        for workload in workloads:
            n = requests if requests is not None else workload.requests
            c = concurrency if concurrency is not None else workload.concurrency
            if progress:
                print(f"{workload.workflow} (/{workload.route}): {n} requests, {c} concurrent...",
                      flush=True)  # fmt: skip
            if warmup:
                await drive(http, daemon.url, workload, requests=warmup, concurrency=warmup,
                            first_index=-warmup)  # fmt: skip
            await cpu.settled()
            before = {**cpu.seconds(), "daemon": daemon.cpu_seconds(), "bench": _own_cpu()}
            began = time.perf_counter()
            answers = await drive(http, daemon.url, workload, requests=n, concurrency=c)
            elapsed = time.perf_counter() - began
            await cpu.settled()
            after = {**cpu.seconds(), "daemon": daemon.cpu_seconds(), "bench": _own_cpu()}
            results.append(
                ThroughputResult(
                    route=workload.route,
                    workflow=workload.workflow,
                    requests=n,
                    concurrency=c,
                    elapsed_s=elapsed,
                    answers=answers,
                    cpu_s={part: after[part] - before[part] for part in before},
                    errors=[a.error for a in answers if a.error][:5],
                )
            )
    return results


def table(results: Sequence[ThroughputResult]) -> str:
    header = (
        "workflow", "route", "conc", "requests", "ok", "statuses", "elapsed s", "exec/s",
        "p50 ms", "p95 ms", "max ms", "CPU ms/exec: endpoint", "lambda", "daemon", "bench",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        f = result.figures()
        statuses = ",".join(f"{n}x{status}" for status, n in f["statuses"].items())
        cpu = f["cpu_ms_per_execution"]
        values = (
            f["workflow"], f"/{result.route}", f["concurrency"], f["requests"], f["ok"], statuses,
            f["elapsed_s"], f["executions_per_s"], f["p50_ms"], f["p95_ms"], f["max_ms"],
            cpu["endpoint"], cpu["lambda"], cpu["daemon"], cpu["bench"],
        )  # fmt: skip
        rows.append(tuple(report.cell(v) for v in values))
    return report.format_table(rows)


def notes(machine: str) -> list[str]:
    return [
        f"machine: {machine}; everything (stack, daemon, load) on it; load average "
        f"{load_average()} (1, 5, 15 min) at the end",
        "backend moto: every state really executed by the local stack (Lambda tasks in "
        "worker processes, S3, the IoT publish); ProcessA's step f also starts Downstream",
        "exec/s: correct answers (200 SUCCEEDED, the workflow's own result) per second of "
        "the run; p50/max: request sent to whole answer read",
        "CPU ms/exec, counted until the stack is idle again (Downstream and the status "
        "forwarder run on after the answers): endpoint = moto and the bridges; lambda = the "
        "Lambda worker processes; daemon = the notifier daemon; bench = this process, the MQTT "
        "broker and the load",
    ]


def load_average() -> str:
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
