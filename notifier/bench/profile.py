"""Where the daemon's CPU goes: py-spy samples of the measured requests, grouped by part.

py-spy (installed with the dev extra) samples the daemon's Python stacks while the load
runs; each sample is put in the group of the innermost frame that says which part of the
daemon it is in (frames of code that every part uses, such as ``json`` or aiohttp's stream
writer, say nothing and are passed over). A sample waiting in the event loop's
``select`` is the loop idle (or waiting for a busy machine to give it a core) and is left
out. The garbage collector runs inside whatever allocated: its time is in the part that
triggered it. Native threads (awscrt's MQTT client) are not sampled; their CPU is in the
measured total but not in any group.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from notifier.lifecycle import terminate

PY_SPY = "py-spy"
RATE = 200
# (group, patterns of a frame's file) in the order they are tried on each frame.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AWS calls: SigV4 signing", ("notifier/aws/signing.py", "awscrt/auth.py", "botocore/auth.py",
                                  "botocore/crt/", "aiobotocore/signers.py")),
    ("AWS calls: HTTP client (aiohttp)", ("aiohttp/client", "aiohttp/connector.py",
                                          "aiohttp/tracing.py", "aiobotocore/httpsession.py",
                                          "aiohappyeyeballs/")),
    ("AWS calls: SDK per-call machinery", ("botocore/", "aiobotocore/")),
    ("AWS calls: the fast path's requests", ("notifier/aws/fast_calls.py",
                                             "notifier/aws/http_connections.py", "httptools/")),
    ("HTTP server (aiohttp)", ("aiohttp/web",)),
    ("MQTT completions", ("notifier/sources/mqtt/", "awscrt/mqtt.py", "awsiot/")),
    ("requests: body, registry, answer, logs, metrics", ("notifier/app/",
                                                          "notifier/requests/bodies.py",
                                                          "notifier/apikeys.py",
                                                          "notifier/requests/answers.py",
                                                          "notifier/requests/waiters.py",
                                                          "notifier/requests/ids.py",
                                                          "notifier/logs.py",
                                                          "notifier/metrics.py",
                                                          "prometheus_client/")),
    ("garbage collection schedule", ("notifier/ops/gc_schedule.py",)),
)  # fmt: skip
OTHER = "event loop, sockets, the rest"
_FILE = re.compile(r"\((.*?)(?::\d+)?\)$")


class ProfileError(Exception):
    pass


def check_available() -> str:
    """py-spy's path; fails early, before any load, without it."""
    found = shutil.which(PY_SPY) or shutil.which(PY_SPY, path=str(Path(sys.executable).parent))
    if found is None:
        raise ProfileError("--profile needs py-spy: pip install py-spy (in the dev extra)")
    return found


@contextlib.asynccontextmanager
async def recording(pid: int, output: Path) -> AsyncIterator[None]:
    """py-spy sampling ``pid`` (and its subprocesses: workers) into ``output``, raw format,
    for as long as the block runs."""
    process = await asyncio.create_subprocess_exec(
        check_available(), "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
        "--rate", str(RATE), "--format", "raw", "--output", str(output),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 30)
        await terminate(process, 5)


def read_split(output: Path) -> Counter[str]:
    """Samples per group, from the file :func:`recording` wrote."""
    try:
        return split(output.read_text())
    except FileNotFoundError:
        raise ProfileError(
            f"py-spy wrote no {output}: it needs to be allowed to trace the daemon (root, or "
            "kernel.yama.ptrace_scope = 0)"
        ) from None


def group(stack: str) -> str | None:
    """The group of one sampled stack (frames outermost first, ``;``-separated); None for
    the event loop waiting in ``select``."""
    frames = stack.split(";")
    if frames[-1].startswith(("EpollSelector.select", "PollSelector.select")):
        return None
    for frame in reversed(frames):
        match = _FILE.search(frame)
        path = match.group(1) if match else ""
        for name, patterns in GROUPS:
            if any(pattern in path for pattern in patterns):
                return name
    return OTHER


def split(raw: str) -> Counter[str]:
    """Samples per group, from py-spy's raw output (one ``stack count`` per line)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and (name := group(stack)) is not None:
            counts[name] += int(count)
    return counts


def split_table(counts: Counter[str], cpu_ms_per_request: float) -> str:
    """Each group's share of the samples, and of the CPU measured per request."""
    total = sum(counts.values())
    if not total:
        return "where the daemon's CPU goes: py-spy caught it busy in no sample"
    lines = [
        f"where the daemon's CPU goes ({total} py-spy samples; ms per request: the share "
        f"of the {cpu_ms_per_request:.2f} ms measured):"
    ]
    for name, count in counts.most_common():
        share = count / total
        lines.append(f"  {name:<50} {share * cpu_ms_per_request:5.2f} ms  {share:4.0%}")
    return "\n".join(lines)
