"""CPUs of their own for the daemon under test.

In production the daemon's machine runs the daemon alone: the broker and Step Functions are
AWS's, the clients are elsewhere. On the bench they share the machine, and a daemon that
shares its CPUs with them also shares their caches and wake-ups, which its CPU time then
counts. With the stand-in backend the bench gives the daemon CPUs of its own (one per
worker process) and runs everything else on the rest: its own process (the broker, the stand-in),
the processes it has started (the local stack's AWS endpoint) and those it starts meanwhile
(the load, py-spy). It does so on Linux, when there are CPUs enough for both.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CoreSplit:
    daemon: frozenset[int]
    """Where the daemon under test runs."""
    rest: frozenset[int]
    """Where everything else runs."""


def split(daemon_processes: int, available: frozenset[int] | None = None) -> CoreSplit | None:
    """The first ``daemon_processes`` (its workers) of the CPUs ``available`` (by default,
    those this process may run on) for the daemon, the others for the rest; None when there
    are not more CPUs than that, or off Linux."""
    if daemon_processes < 1:
        raise ValueError("the daemon has at least one process")
    if available is None:
        if sys.platform != "linux":
            return None
        available = frozenset(os.sched_getaffinity(0))
    if len(available) <= daemon_processes:
        return None
    ordered = sorted(available)
    return CoreSplit(
        daemon=frozenset(ordered[:daemon_processes]),
        rest=frozenset(ordered[daemon_processes:]),
    )


@contextlib.contextmanager
def pinned(cpus: frozenset[int]) -> Iterator[None]:
    """This process and every process it has started, with all their threads, on ``cpus``,
    and so whatever they start meanwhile; at the end, all of them on this process's CPUs
    before."""
    before = frozenset(os.sched_getaffinity(0))
    try:
        pin(cpus, tree=True)
        yield
    finally:
        pin(before, tree=True)


def pin(cpus: frozenset[int], *, tree: bool = False) -> None:
    """Every thread of this process (``tree``: and of every process it has started, theirs
    too) on ``cpus``; the threads and processes they start inherit it."""
    done: set[int] = set()
    # Until a pass finds no thread left: one not yet moved may start another meanwhile.
    while todo := _threads(_descendants(os.getpid()) if tree else [os.getpid()]) - done:
        for thread in todo:
            # sched_setaffinity with a thread id sets that thread's alone.
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.sched_setaffinity(thread, cpus)
        done |= todo


def _threads(processes: list[int]) -> set[int]:
    threads: set[int] = set()
    for process in processes:
        with contextlib.suppress(FileNotFoundError):  # it ended meanwhile
            threads.update(int(task) for task in os.listdir(f"/proc/{process}/task"))
    return threads


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        # After the command name (which may hold spaces): state, then the parent's id.
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        process = todo.pop()
        found.append(process)
        todo.extend(children.get(process, []))
    return found
