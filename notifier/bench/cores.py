"""Cores of their own for the daemon under test.

In production the daemon's machine runs the daemon alone: the broker and Step Functions are
AWS's, the clients are elsewhere. On the bench they share the machine, and a daemon that
shares its cores with them also shares their caches and wake-ups, which its CPU time then
counts. With the stand-in backend the bench gives the daemon cores of its own (one per
worker process) and runs itself, the stand-in, the broker and the load on the rest, when the
machine has cores enough for both (Linux; elsewhere everything shares them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CoreSplit:
    daemon: frozenset[int]
    """Where the daemon under test runs."""
    rest: frozenset[int]
    """Where the bench's own processes run."""

    def describe(self) -> str:
        return f"the daemon on CPU {_listed(self.daemon)}, the rest on CPU {_listed(self.rest)}"


def split(daemon_processes: int, available: frozenset[int] | None = None) -> CoreSplit | None:
    """``daemon_processes`` of the cores this process may run on (``available``: those of
    its affinity) for the daemon, the others for the rest; None when there are not more
    cores than that, or the platform cannot say which."""
    if available is None:
        if not hasattr(os, "sched_getaffinity"):
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
def pinned(cores: frozenset[int]) -> Iterator[None]:
    """Every thread of this process, and every process and thread it starts meanwhile, on
    ``cores``; the threads there are at the end are given the process's cores back."""
    before = frozenset(os.sched_getaffinity(0))
    pin(cores)
    try:
        yield
    finally:
        pin(before)


def pin(cores: frozenset[int]) -> None:
    """Every thread of this process, and every process and thread it starts, on ``cores``."""
    # sched_setaffinity with a thread id sets that thread's alone.
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task.name), cores)


def _listed(cores: frozenset[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))
