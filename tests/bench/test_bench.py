"""``notifier bench`` with tiny numbers: behaviour and the shape of what it prints, no timing."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from typing import Any

import pytest

from notifier import cli
from notifier.bench import report
from notifier.bench import run as bench
from notifier.config import Settings
from notifier.local.settings import LocalStackSettings
from notifier.local.stack import LocalStack

MODE_FIELDS = {
    "backend", "concurrency", "requests", "ok", "latency_samples", "p50_ms", "p95_ms",
    "p99_ms", "max_ms", "throughput_rps", "api_calls", "cpu_ms_per_request", "peak_rss_mb",
    "completed_via", "quota_events", "busiest_connection_messages_per_s", "daemon_cores",
}  # fmt: skip
QUOTA_EVENTS = {
    "iot_discarded", "iot_payload_refused", "iot_subscriptions_refused", "iot_connects_refused",
    "sfn_throttled",
}  # fmt: skip


def bench_args(*argv: str) -> object:
    return cli.build_parser().parse_args(["bench", *argv])


def last_json_line(text: str) -> dict[str, object]:
    return json.loads(text.strip().splitlines()[-1])


async def test_mqtt_and_poll_on_moto(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    args = bench_args(
        "--requests", "4", "--concurrency", "2", "--warmup", "1", "--poll-interval", "0.5",
        "--json",
    )  # fmt: skip
    assert await bench.run(args, stack=local_stack) == 0
    output = capsys.readouterr().out
    modes = last_json_line(output)["modes"]
    assert set(modes) == {"mqtt", "poll"}
    for name, figures in modes.items():
        assert set(figures) == MODE_FIELDS, name
        assert figures["backend"] == "moto"
        assert figures["ok"] == figures["requests"] == figures["latency_samples"] == 4, name
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
        assert figures["api_calls"]["StartExecution"] == 4
        assert figures["cpu_ms_per_request"] > 0 and figures["peak_rss_mb"] > 0
        assert figures["completed_via"] == {name: 4}
        assert figures["quota_events"] == dict.fromkeys(QUOTA_EVENTS, 0)
    # The daemon's MQTT connection, at least: each completion is one message on it.
    assert modes["mqtt"]["busiest_connection_messages_per_s"] >= 1
    assert "DescribeExecution" not in modes["mqtt"]["api_calls"]
    assert modes["poll"]["api_calls"]["DescribeExecution"] >= 4
    table = [line.split() for line in output.splitlines()]
    assert ["mode", "backend", "conc", "requests", "ok"] in [row[:5] for row in table]
    assert ["mqtt", "moto", "2", "4", "4"] in [row[:5] for row in table]


async def test_standin_backend_answers_both_modes(local_stack: LocalStack) -> None:
    options = bench.BenchOptions(
        requests=3, concurrency=3, backend="standin", wait=0.2, poll_interval=0.3, warmup=0
    )
    results = await bench.run_modes(local_stack, options)
    assert [(r.mode, r.backend, r.ok, len(r.latencies_ms)) for r in results] == [
        ("mqtt", "stand-in", 3, 3),
        ("poll", "stand-in", 3, 3),
    ]
    assert "DescribeExecution" not in results[0].api_calls
    assert results[1].api_calls["DescribeExecution"] >= 3
    assert [r.completed_via for r in results] == [{"mqtt": 3}, {"poll": 3}]
    # Stop and answer on one clock: no answer is read before its execution stopped.
    assert all(latency > 0 for result in results for latency in result.latencies_ms)


async def test_the_standin_throttles_and_its_events_are_reported(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Polling 4 requests every 0.1 s against a DescribeExecution bucket of 2, refilled at 1
    a second: throttled, counted, and still every answer comes (the SDK retries)."""
    args = bench_args(
        "--backend", "standin", "--modes", "poll", "--requests", "4", "--concurrency", "4",
        "--wait", "2", "--warmup", "0", "--poll-interval", "0.1", "--json",
    )  # fmt: skip
    quotas = LocalStackSettings().quotas.with_values(["sfn-describe-execution=2/1"])
    stack = copy.copy(local_stack)
    stack.settings = dataclasses.replace(local_stack.settings, quotas=quotas)
    assert await bench.run(args, stack=stack) == 0
    output = capsys.readouterr().out
    poll = last_json_line(output)["modes"]["poll"]
    assert poll["quota_events"]["sfn_throttled"] > 0
    assert poll["completed_via"] == {"poll": 4}
    assert f"{poll['quota_events']['sfn_throttled']} sfn_throttled" in output


async def test_workers_share_the_load_and_their_figures_are_summed(
    local_stack: LocalStack,
) -> None:
    options = bench.BenchOptions(
        requests=6, concurrency=6, modes=("mqtt",), backend="standin", wait=0.2, warmup=0,
        workers=2,
    )  # fmt: skip
    [result] = await bench.run_modes(local_stack, options)
    assert (result.ok, len(result.latencies_ms)) == (6, 6)
    # Every call counted once, whichever worker made it.
    assert result.api_calls == {"PutObject": 6, "StartExecution": 6}
    assert result.cpu_s > 0 and result.peak_rss_mb > 0


async def test_held_requests_all_answered(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Settings] = []
    daemon_settings = bench.daemon_settings

    def recorded(*args: Any) -> Settings:
        made.append(daemon_settings(*args))
        return made[-1]

    monkeypatch.setattr(bench, "daemon_settings", recorded)
    assert await bench.run(bench_args("--held", "20", "--json"), stack=local_stack) == 0
    # Its MQTT connections sized for the completions released at once (20 in a second).
    assert [s.mqtt.peak_completions_per_second for s in made] == [20]
    held = last_json_line(capsys.readouterr().out)["held"]
    assert held["requests"] == held["held_at_once"] == held["ok"] == 20
    assert held["latency_samples"] == 20 and held["backend"] == "stand-in"
    assert held["p99_ms"] is not None and held["peak_rss_mb"] > 0
    available = sorted(os.sched_getaffinity(0))
    assert held["daemon_cores"] == (available[:1] if len(available) > 1 else None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--modes", "mqtt,carrier-pigeon"], "--modes"),
        (["--modes", "mqtt,mqtt"], "--modes"),
        (["--requests", "0"], "--requests"),
        (["--held", "0"], "--held"),
        (["--wait", "0.5"], "whole seconds"),
        (["--poll-interval", "0"], "--poll-interval"),
        (["--throughput", "--held", "5"], "--throughput"),
        (["--throughput", "--cut", "5"], "--throughput"),
        (["--cut", "5", "--held", "5"], "--cut"),
        (["--throughput", "--routes", "p1,nowhere"], "--routes"),
        (["--share-cores"], "--share-cores"),
        (["--share-cores", "--cut", "5"], "--share-cores"),
        (["--share-cores", "--throughput"], "--share-cores"),
    ],
)
def test_bad_options_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("notifier: ") and message in err


def test_plot_without_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "--plot", "out.png"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'notifier[plot]'" in err


THROUGHPUT_FIELDS = {
    "workflow", "requests", "concurrency", "ok", "statuses", "elapsed_s", "executions_per_s",
    "p50_ms", "p95_ms", "max_ms", "cpu_ms_per_execution",
}  # fmt: skip


async def test_throughput_runs_each_workflow_through_the_stack(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    args = bench_args(
        "--throughput", "--requests", "3", "--concurrency", "3", "--warmup", "1", "--json"
    )
    assert await bench.run(args, stack=local_stack) == 0
    output = capsys.readouterr().out
    figures = last_json_line(output)["throughput"]
    assert set(figures) == {"p1", "hello"}
    assert figures["p1"]["workflow"] == "ProcessA" and figures["hello"]["workflow"] == "Hello"
    for route, run in figures.items():
        assert set(run) == THROUGHPUT_FIELDS, route
        assert run["ok"] == run["requests"] == 3 and run["statuses"] == {"200": 3}, route
        assert run["executions_per_s"] > 0 and run["p50_ms"] <= run["p95_ms"] <= run["max_ms"]
        cpu = run["cpu_ms_per_execution"]
        assert set(cpu) == {"endpoint", "lambda", "daemon", "bench"}, route
        assert cpu["endpoint"] > 0 and cpu["daemon"] > 0, route
    # ProcessA's six steps run in Lambda workers; they are counted with the stack.
    assert figures["p1"]["cpu_ms_per_execution"]["lambda"] > 0
    rows = [line.split() for line in output.splitlines()]
    assert ["ProcessA", "/p1", "3", "3", "3", "3x200"] in [row[:6] for row in rows]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [report.percentile(values, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert report.percentile([], 50) is None
    assert report.percentile([7.0], 99) == 7.0


async def test_cut_link_with_and_without_the_queue(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    args = bench_args("--cut", "2", "--requests", "3", "--wait", "1", "--json")
    assert await bench.run(args, stack=local_stack) == 0
    output = capsys.readouterr().out
    cut = last_json_line(output)["cut"]
    assert set(cut) == {"queue", "sweeps"}
    for variant, figures in cut.items():
        assert figures["ok"] == figures["requests"] == 3, variant
        assert figures["stop_to_answer"]["answers"] == 3, variant
        assert set(figures["stop_to_answer_by_path"]) <= {"mqtt", "sqs", "poll"}
        assert figures["probes_via_mqtt"] == "10/10", variant
        assert figures["mqtt_delivering_after_s"] is not None, variant
        assert figures["describe_calls_after"] == 0, variant
    assert "sqs" not in cut["sweeps"]["stop_to_answer_by_path"]
    table = [line.split() for line in output.splitlines()]
    assert ["run", "path", "answers", "p50", "s"] in [row[:5] for row in table]


async def test_a_tracing_daemon_exports_its_spans_to_the_bench_s_sink(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    args = bench_args(
        "--backend", "standin", "--modes", "mqtt", "--requests", "20", "--concurrency", "4",
        "--wait", "0.2", "--warmup", "0", "--tracing", "--json",
    )  # fmt: skip
    assert await bench.run(args, stack=local_stack) == 0
    mqtt = last_json_line(capsys.readouterr().out)["modes"]["mqtt"]
    assert mqtt["ok"] == 20
    assert mqtt["tracing_exports"] >= 1  # batched: a few exports carry every span
