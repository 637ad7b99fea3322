"""The daemon under test on CPUs of its own, the rest of the bench on the others."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from notifier.bench import cores
from notifier.bench import run as bench
from notifier.bench.daemon_process import DaemonProcess
from notifier.bench.load import LoadResult, LoadRun
from notifier.local.stack import LocalStack

AVAILABLE = frozenset(os.sched_getaffinity(0))
LAST = frozenset({max(AVAILABLE)})

needs_two_cpus = pytest.mark.skipif(
    len(AVAILABLE) < 2, reason="moving work between CPUs needs two of them"
)


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPUs each thread of ``pid`` may run on, as a set of those sets."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            found.add(frozenset(os.sched_getaffinity(int(task))))
    return found


def children(name: str) -> list[int]:
    """This process's children whose command line names ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat, command = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == os.getpid() and name.encode() in command:
            found.append(int(entry.name))
    return found


def test_the_daemon_gets_the_first_cpus_and_the_rest_the_others() -> None:
    assert cores.split(1, frozenset({0, 1})) == cores.CoreSplit(frozenset({0}), frozenset({1}))
    assert cores.split(2, frozenset({3, 5, 9})) == cores.CoreSplit(
        frozenset({3, 5}), frozenset({9})
    )


def test_no_split_without_a_cpu_left_for_the_rest() -> None:
    assert cores.split(1, frozenset({0})) is None
    assert cores.split(2, frozenset({0, 1})) is None
    with pytest.raises(ValueError, match="at least one"):
        cores.split(0, frozenset({0, 1}))


@needs_two_cpus
def test_pinned_moves_every_thread_and_child_and_gives_the_cpus_back() -> None:
    release = threading.Event()
    threads = [threading.Thread(target=release.wait)]
    threads[0].start()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        with cores.pinned(LAST):
            threads.append(threading.Thread(target=release.wait))
            threads[1].start()
            assert thread_cpus(os.getpid()) == thread_cpus(child.pid) == {LAST}
        assert thread_cpus(os.getpid()) == thread_cpus(child.pid) == {AVAILABLE}
    finally:
        release.set()
        for thread in threads:
            thread.join()
        child.communicate(b"")


@needs_two_cpus
async def test_the_daemon_process_and_its_threads_run_on_its_cpus(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    settings = bench.daemon_settings(local_stack, "mqtt", bench.BenchOptions(), 10, None)
    with (tmp_path / "daemon.log").open("wb") as log:
        async with DaemonProcess(settings, log, cores=LAST) as daemon:
            # Its MQTT connection is up, so awscrt's threads are among them.
            assert len(os.listdir(f"/proc/{daemon.pid}/task")) > 1
            assert thread_cpus(daemon.pid) == {LAST}


@needs_two_cpus
async def test_the_standin_bench_runs_the_daemon_apart_from_everything_else(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen while the load runs: the daemon on the first CPU, the bench, the stack's AWS
    endpoint and the load on the others; afterwards, the bench's CPUs as they were."""
    seen: dict[str, set[frozenset[int]]] = {}
    closed_loop, start_python = bench.load_process.closed_loop, bench.load_process.start_python

    async def watched_run(run: LoadRun) -> LoadResult:
        [daemon] = children("notifier.bench.daemon_process")
        seen["daemon"] = thread_cpus(daemon)
        seen["bench"] = thread_cpus(os.getpid())
        seen["endpoint"] = thread_cpus(local_stack.endpoint.pid)
        return await closed_loop(run)

    async def watched_start(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await start_python(*args, **kwargs)
        seen["load"] = thread_cpus(process.pid)
        return process

    monkeypatch.setattr(bench.load_process, "closed_loop", watched_run)
    monkeypatch.setattr(bench.load_process, "start_python", watched_start)
    options = bench.BenchOptions(
        requests=2, concurrency=2, modes=("mqtt",), backend="standin", wait=0.2, warmup=0
    )
    [result] = await bench.run_modes(local_stack, options)
    first, rest = frozenset({min(AVAILABLE)}), AVAILABLE - {min(AVAILABLE)}
    assert seen == {"daemon": {first}, "bench": {rest}, "endpoint": {rest}, "load": {rest}}
    assert result.ok == 2 and result.daemon_cores == first
    assert result.figures()["daemon_cores"] == [min(AVAILABLE)]
    assert thread_cpus(os.getpid()) == thread_cpus(local_stack.endpoint.pid) == {AVAILABLE}

    seen.clear()
    shared = dataclasses.replace(options, share_cores=True)
    [result] = await bench.run_modes(local_stack, shared)
    assert seen["daemon"] == seen["bench"] == seen["load"] == {AVAILABLE}
    assert result.daemon_cores is None and result.figures()["daemon_cores"] is None
