"""Where the daemon's CPU goes: samples grouped by the innermost frame that names a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.bench import profile
from notifier.bench import run as bench
from notifier.local.stack import LocalStack

LOOP = "_run_once (asyncio/base_events.py:1922);_run (asyncio/events.py:80)"
HANDLER = f"{LOOP};_handle (aiohttp/web_app.py:569);start (notifier/app/handlers.py:130)"


@pytest.mark.parametrize(
    ("stack", "group"),
    [
        # aiohttp's stream writer and asyncio say nothing; the client request above does.
        (
            f"{HANDLER};_send (notifier/aws/fast_calls.py:250);_request (aiohttp/client.py:700);"
            "write (aiohttp/http_writer.py:70);write (asyncio/selector_events.py:1040)",
            "AWS calls: HTTP client (aiohttp)",
        ),
        (
            f"{HANDLER};sign (notifier/aws/fast_calls.py:230);"
            "aws_sign_request (awscrt/auth.py:835)",
            "AWS calls: SigV4 signing",
        ),
        (
            f"{HANDLER};_make_api_call (aiobotocore/client.py:400);"
            "to_string (botocore/useragent.py:300)",
            "AWS calls: SDK per-call machinery",
        ),
        (
            f"{HANDLER};serialize (notifier/aws/fast_calls.py:300);dumps (json/__init__.py:231)",
            "AWS calls: the fast path's requests",
        ),
        (f"{HANDLER};final (notifier/requests/answers.py:80);dumps (json/__init__.py:231)",
         "requests: body, registry, answer, logs, metrics"),
        (f"{HANDLER};_answer (notifier/app/handlers.py:290)",
         "requests: body, registry, answer, logs, metrics"),
        (f"{LOOP};_handle (aiohttp/web_app.py:569);json_errors (notifier/app/middlewares.py:30);"
         "parse_object (notifier/requests/bodies.py:30);loads (json/__init__.py:346)",
         "requests: body, registry, answer, logs, metrics"),
        (f"{LOOP};data_received (aiohttp/web_protocol.py:400)", "HTTP server (aiohttp)"),
        (f"{LOOP};handle_message (notifier/sources/mqtt/source.py:45);loads (json/__init__.py:346)",
         "MQTT completions"),
        (f"{LOOP};_read_ready (asyncio/selector_events.py:1000)", profile.OTHER),
        ("run_forever (asyncio/base_events.py:607);select (selectors.py:469)", profile.OTHER),
        ("_run_once (asyncio/base_events.py:1898);EpollSelector.select (selectors.py:468)",
         None),
    ],
)  # fmt: skip
def test_each_sample_goes_to_the_innermost_part_named(stack: str, group: str | None) -> None:
    assert profile.group(stack) == group


def test_split_counts_samples_and_leaves_the_idle_loop_out() -> None:
    raw = "\n".join(
        [
            f"{LOOP};data_received (aiohttp/web_protocol.py:400) 3",
            "_run_once (asyncio/base_events.py:1898);EpollSelector.select (selectors.py:468) 9",
            f"{LOOP};_read_ready (asyncio/selector_events.py:1000) 1",
        ]
    )
    counts = profile.split(raw)
    assert counts == {"HTTP server (aiohttp)": 3, profile.OTHER: 1}
    table = profile.split_table(counts, 2.0)
    assert "4 py-spy samples" in table
    assert "HTTP server (aiohttp)" in table and "1.50 ms" in table and "75%" in table


async def test_profiled_run_splits_the_daemons_samples(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    options = bench.BenchOptions(
        requests=60, concurrency=30, modes=("mqtt",), backend="standin", wait=0.2, warmup=0,
        profile=tmp_path / "daemon.txt",
    )  # fmt: skip
    [result] = await bench.run_modes(local_stack, options)
    assert result.ok == 60
    assert (tmp_path / "daemon.txt").exists()
    assert sum(result.cpu_split.values()) > 0
    assert set(result.cpu_split) <= {name for name, _ in profile.GROUPS} | {profile.OTHER}
