"""Figures from samples: added latency percentiles, throughput, cost; a table, JSON, a plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def _common_figures(self) -> dict[str, Any]:
        return _figures(self.requests, self.ok, self.latencies_ms, self.cpu_s, self.peak_rss_mb)


@dataclass(kw_only=True)
class ModeResult(RunResult):
    """One completion mode under the closed-loop load."""

    mode: str
    concurrency: int
    elapsed_s: float
    api_calls: dict[str, int]

    def figures(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "concurrency": self.concurrency,
            **self._common_figures(),
            "throughput_rps": _round(self.requests / self.elapsed_s if self.elapsed_s else None),
            "api_calls": dict(sorted(self.api_calls.items())),
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
    rows = [header]
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
