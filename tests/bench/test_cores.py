"""The daemon under test on cores of its own, the rest of the bench on the others."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

from notifier.bench import cores
from notifier.bench import run as bench
from notifier.bench.daemon_process import DaemonProcess
from notifier.local.stack import LocalStack


def thread_cores(pid: int) -> set[frozenset[int]]:
    """The cores each thread of ``pid`` may run on, as a set of those sets."""
    return {frozenset(os.sched_getaffinity(int(task))) for task in os.listdir(f"/proc/{pid}/task")}


def test_the_daemon_gets_the_first_cores_and_the_rest_the_others() -> None:
    assert cores.split(1, frozenset({0, 1})) == cores.CoreSplit(frozenset({0}), frozenset({1}))
    assert cores.split(2, frozenset({3, 5, 9})) == cores.CoreSplit(
        frozenset({3, 5}), frozenset({9})
    )


def test_no_split_without_a_core_left_for_the_rest() -> None:
    assert cores.split(1, frozenset({0})) is None
    assert cores.split(2, frozenset({0, 1})) is None


def test_pinned_moves_every_thread_and_gives_the_cores_back() -> None:
    available = frozenset(os.sched_getaffinity(0))
    one = frozenset({max(available)})
    release = threading.Event()
    before = threading.Thread(target=release.wait)
    before.start()
    try:
        with cores.pinned(one):
            during = threading.Thread(target=release.wait)
            during.start()
            assert thread_cores(os.getpid()) == {one}
        assert thread_cores(os.getpid()) == {available}
    finally:
        release.set()
        before.join()
        during.join()


async def test_the_daemon_process_and_its_threads_run_on_its_cores(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    one = frozenset({max(os.sched_getaffinity(0))})
    settings = bench.daemon_settings(local_stack, "mqtt", bench.BenchOptions(), 10, None)
    with (tmp_path / "daemon.log").open("wb") as log:
        async with DaemonProcess(settings, log, cores=one) as daemon:
            # Its MQTT connection is up, so awscrt's threads are among them.
            assert len(os.listdir(f"/proc/{daemon.pid}/task")) > 1
            assert thread_cores(daemon.pid) == {one}


async def test_the_standin_bench_runs_the_daemon_on_its_own_cores(
    local_stack: LocalStack,
) -> None:
    available = frozenset(os.sched_getaffinity(0))
    options = bench.BenchOptions(
        requests=2, concurrency=2, modes=("mqtt",), backend="standin", wait=0.2, warmup=0
    )
    [result] = await bench.run_modes(local_stack, options)
    split = cores.split(1)
    assert result.daemon_cores == (split.daemon if split is not None else None)
    assert result.figures()["daemon_cores"] == (sorted(split.daemon) if split is not None else None)
    assert thread_cores(os.getpid()) == {available}  # this process's cores given back
    shared = dataclasses.replace(options, share_cores=True)
    [result] = await bench.run_modes(local_stack, shared)
    assert result.daemon_cores is None and result.figures()["daemon_cores"] is None
