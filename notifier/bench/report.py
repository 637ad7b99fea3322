"""Figures from samples: added latency percentiles, throughput, cost; a table, JSON, a plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notifier.bench.quotas import QuotaReport

PLOT_EXTRA = "pip install 'notifier[plot]' (or: make install-plot)"


class PlotUnavailableError(Exception):
    def __init__(self) -> None:
        super().__init__(f"--plot needs matplotlib: {PLOT_EXTRA}")


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(kw_only=True)
class RunResult:
    """What every run measures."""

    backend: str
    requests: int
    ok: int
    latencies_ms: list[float]
    """Added latency of each correct answer whose stop time is known."""
    cpu_s: float
    peak_rss_mb: float
    errors: list[str] = field(default_factory=list)
    daemon_cores: frozenset[int] | None = None
    """The cores the daemon had to itself (:mod:`notifier.bench.cores`); None: it shared
    the machine's with the rest of the bench."""

    def _common_figures(self) -> dict[str, Any]:
        return {
            **_figures(self.requests, self.ok, self.latencies_ms, self.cpu_s, self.peak_rss_mb),
            "daemon_cores": None if self.daemon_cores is None else sorted(self.daemon_cores),
        }


@dataclass(kw_only=True)
class ModeResult(RunResult):
    """One completion mode under the closed-loop load."""

    mode: str
    concurrency: int
    elapsed_s: float
    api_calls: dict[str, int]
    cpu_split: dict[str, int] = field(default_factory=dict)
    """py-spy samples of the daemon by where they were (``--profile``)."""
    completed_via: dict[str, int]
    """Answers by the path that completed them (the answers' ``completedVia``)."""
    quotas: QuotaReport
    tracing_exports: int | None = None
    """With ``--tracing``: the span exports the daemon sent (None: not tracing)."""

    def figures(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "concurrency": self.concurrency,
            **self._common_figures(),
            "throughput_rps": _round(self.requests / self.elapsed_s if self.elapsed_s else None),
            "api_calls": dict(sorted(self.api_calls.items())),
            "completed_via": dict(sorted(self.completed_via.items())),
            "quota_events": self.quotas.events,
            "busiest_connection_messages_per_s": self.quotas.busiest_connection_per_s,
            **({"cpu_split_samples": self.cpu_split} if self.cpu_split else {}),
            **({} if self.tracing_exports is None else {"tracing_exports": self.tracing_exports}),
        }


@dataclass(kw_only=True)
class HeldResult(RunResult):
    """Many requests held at once by one daemon, then answered."""

    held_at_once: int

    def figures(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "held_at_once": self.held_at_once,
            **self._common_figures(),
        }


@dataclass(kw_only=True)
class CutResult:
    """Held requests answered while the daemon's MQTT link is cut, and MQTT afterwards."""

    variant: str
    """``queue`` (with the instance's completion queue) or ``sweeps`` (without)."""
    requests: int
    ok: int
    cut_s: float
    latencies_by_path_ms: dict[str, list[float]]
    """Workflow end to answer, for each correct answer, by the path that completed it."""
    answered_during_cut: bool
    mqtt_down_after_s: float | None
    """From the cut until the daemon knew MQTT was down."""
    ended_after_cut_s: tuple[float, float] | None
    """When the first and the last of the workflows ended, after the cut."""
    mqtt_connected_after_s: float | None
    """From the link's return until the daemon said MQTT was connected (and subscribed)."""
    mqtt_delivering_after_s: float | None
    """From the link's return until the end of the first workflow MQTT completed."""
    probes_via_mqtt: int
    probes: int
    describes_after: int
    """DescribeExecution calls while the requests after the cut were answered."""
    mqtt_missed: int
    errors: list[str] = field(default_factory=list)

    @property
    def latencies_ms(self) -> list[float]:
        return [v for values in self.latencies_by_path_ms.values() for v in values]

    def figures(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, Any]:
            return {
                "answers": len(values),
                "p50_s": _round(_seconds(percentile(values, 50))),
                "p95_s": _round(_seconds(percentile(values, 95))),
                "p99_s": _round(_seconds(percentile(values, 99))),
                "max_s": _round(_seconds(max(values) if values else None)),
            }

        return {
            "requests": self.requests,
            "ok": self.ok,
            "cut_s": self.cut_s,
            "answered_during_cut": self.answered_during_cut,
            "mqtt_down_after_s": _round(self.mqtt_down_after_s),
            "ended_after_cut_s": [_round(v) for v in self.ended_after_cut_s or ()],
            "stop_to_answer": stats(self.latencies_ms),
            "stop_to_answer_by_path": {
                path: stats(values) for path, values in sorted(self.latencies_by_path_ms.items())
            },
            "mqtt_connected_after_s": _round(self.mqtt_connected_after_s),
            "mqtt_delivering_after_s": _round(self.mqtt_delivering_after_s),
            "probes_via_mqtt": f"{self.probes_via_mqtt}/{self.probes}",
            "describe_calls_after": self.describes_after,
            "mqtt_missed": self.mqtt_missed,
        }


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _figures(
    requests: int, ok: int, latencies_ms: list[float], cpu_s: float, peak_rss_mb: float
) -> dict[str, Any]:
    return {
        "requests": requests,
        "ok": ok,
        "latency_samples": len(latencies_ms),
        "p50_ms": _round(percentile(latencies_ms, 50)),
        "p95_ms": _round(percentile(latencies_ms, 95)),
        "p99_ms": _round(percentile(latencies_ms, 99)),
        "max_ms": _round(max(latencies_ms) if latencies_ms else None),
        "cpu_ms_per_request": _round(1000 * cpu_s / requests, 3),
        "peak_rss_mb": _round(peak_rss_mb, 1),
    }


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def modes_table(results: Sequence[ModeResult]) -> str:
    header = (
        "mode", "backend", "conc", "requests", "ok", "p50 ms", "p95 ms", "p99 ms", "req/s",
        "Describe", "AWS calls/req", "CPU ms/req", "peak RSS MB",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        f = result.figures()
        calls = sum(result.api_calls.values()) / result.requests
        rows.append(
            tuple(
                cell(v)
                for v in (
                    result.mode,
                    f["backend"],
                    f["concurrency"],
                    f["requests"],
                    f["ok"],
                    f["p50_ms"],
                    f["p95_ms"],
                    f["p99_ms"],
                    f["throughput_rps"],
                    result.api_calls.get("DescribeExecution", 0),
                    round(calls, 2),
                    f["cpu_ms_per_request"],
                    f["peak_rss_mb"],
                )  # fmt: skip
            )
        )
    return format_table(rows)


def quota_line(result: ModeResult) -> str:
    """Completion paths, AWS quota events and the busiest MQTT connection of one mode."""
    via = ", ".join(f"{n} {path}" for path, n in sorted(result.completed_via.items()))
    events = [f"{n} {kind}" for kind, n in result.quotas.events.items() if n]
    return (
        f"completed via {via or 'nothing'}; AWS quota events: {', '.join(events) or 'none'}; "
        f"busiest MQTT connection {result.quotas.busiest_connection_per_s} messages in one "
        f"second ({result.quotas.busiest_client_id or 'none'})"
    )


def held_table(result: HeldResult) -> str:
    f = result.figures()
    header = ("backend", "requests", "held at once", "ok", "p50 ms", "p99 ms", "CPU ms/req",
              "peak RSS MB")  # fmt: skip
    row = tuple(
        cell(f[k])
        for k in (
            "backend",
            "requests",
            "held_at_once",
            "ok",
            "p50_ms",
            "p99_ms",
            "cpu_ms_per_request",
            "peak_rss_mb",
        )  # fmt: skip
    )
    return format_table([header, row])


def cut_table(results: Sequence[CutResult]) -> str:
    header = ("run", "path", "answers", "p50 s", "p95 s", "p99 s", "max s")
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        f = result.figures()
        paths = [("all", f["stop_to_answer"]), *f["stop_to_answer_by_path"].items()]
        for path, stats in paths:
            first = path == "all"
            rows.append(
                tuple(
                    cell(v)
                    for v in (
                        result.variant if first else "",
                        path,
                        f"{stats['answers']}/{result.requests}" if first else stats["answers"],
                        stats["p50_s"],
                        stats["p95_s"],
                        stats["p99_s"],
                        stats["max_s"],
                    )
                )
            )
    lines = [format_table(rows), ""]
    for result in results:
        f = result.figures()
        ended = f["ended_after_cut_s"]
        lines.append(
            f"{result.variant}: the workflows ended {cell(ended[0] if ended else None)} to "
            f"{cell(ended[1] if ended else None)} s after the cut; the daemon knew MQTT was "
            f"down {cell(f['mqtt_down_after_s'])} s after it"
        )
        lines.append(
            f"{result.variant}: after the link returned, MQTT connected in "
            f"{cell(f['mqtt_connected_after_s'])} s and completed a workflow that ended "
            f"{cell(f['mqtt_delivering_after_s'])} s after it; then {f['probes_via_mqtt']} "
            f"requests via MQTT, {f['describe_calls_after']} DescribeExecution calls; "
            f"completions MQTT missed while connected: {f['mqtt_missed']}"
        )
    return "\n".join(lines)


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(row))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_plotting() -> None:
    """Fail early, before any load, when ``--plot`` cannot work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError() from None


def plot(results: Sequence[ModeResult], path: Path, title: str) -> None:
    """Added latency of each mode as a cumulative distribution (log scale), to ``path``."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=120)
    for result in results:
        values = sorted(result.latencies_ms)
        if not values:
            continue
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        p50 = percentile(values, 50)
        label = (
            f"{result.mode} ({result.backend}, {result.concurrency} concurrent): "
            f"p50 {p50:,.1f} ms, p99 {percentile(values, 99):,.1f} ms"
        )
        axes.step(values, fractions, where="post", label=label)
    axes.set_xscale("log")
    axes.set_xlabel("added latency: workflow end to answer received (ms, log scale)")
    axes.set_ylabel("fraction of requests")
    axes.set_ylim(0, 1.02)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
