"""``notifier bench``: runs the local stack, daemons and the load, and reports.

Added latency is measured from the moment a workflow's completion reaches the MQTT broker
(the end of its work: moto's Hello publishes from its Notify state, the stand-in at its stop
time) to the moment the client has read the whole answer. Both are read from this machine's
wall clock, in microseconds. moto records an execution's ``stopDate`` only in milliseconds,
and ~25 ms after the publish (its final Pass state and bookkeeping), so it is not used.

The local stack's modules (the ``local`` extra) are imported only once a run starts, so that
the command line is built without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import aiohttp

from notifier.bench import cores, load, load_process, profile, report, throughput
from notifier.bench.cut import VARIANTS, CutOptions, run_cut
from notifier.bench.daemon_process import DaemonProcess, api_calls
from notifier.bench.load import LoadRun
from notifier.bench.otlp_sink import OtlpSink
from notifier.bench.quotas import QuotaWatch
from notifier.bench.report import HeldResult, ModeResult
from notifier.config import AwsSettings, DaemonSettings, Settings, SqsSettings
from notifier.local import quotas
from notifier.local.daemon_config import local_settings
from notifier.local.settings import LocalStackSettings
from notifier.ops.gc_schedule import ScheduledCollection
from notifier.topics import STATUS_SUBTOPIC
from notifier.tracing import OTEL_EXTRA, TracingSettings, otel_missing

if TYPE_CHECKING:
    from notifier.local.broker_auth import AccessControl
    from notifier.local.sfn_standin import StepFunctionsStandIn
    from notifier.local.stack import LocalStack

MODES = ("mqtt", "poll")
BACKENDS = {"moto": "moto", "standin": "stand-in"}
# Seconds a request may be held before it would get a 202 (the daemon's max_wait).
HOLD = 120.0
QUICK = {"requests": 40, "concurrency": 5}
DEFAULTS = {"requests": 200, "concurrency": 10}
CUT_DEFAULTS = {"requests": 100, "wait": 8}
# Completions handed to the broker per second when held requests are released: as fast as
# their starts went (the local stack's StartExecution rate, local.toml's sfn_start_rate),
# which the daemon's MQTT pool spread over its connections within IoT Core's limit.
RELEASE_RATE = 300.0
DEFAULT_SFN_READ_RATE = DaemonSettings().sfn_read_rate
NOT_COMPLETED = "none"
"""``completed_via`` of an answer no completion brought (a 202, an error, no answer)."""


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class BenchOptions:
    requests: int = DEFAULTS["requests"]
    concurrency: int = DEFAULTS["concurrency"]
    modes: tuple[str, ...] = MODES
    backend: str = "moto"
    wait: float = 1.0
    """Hello's ``waitSeconds``: how long each workflow runs."""
    poll_interval: float = 1.5
    warmup: int = 5
    workers: int = 1
    """Worker processes of the daemon under test (``notifier serve --workers``)."""
    profile: Path | None = None
    """Where py-spy's samples of each mode's measured requests go."""
    log_dir: Path | None = None
    """Where the daemons' logs go (a temporary directory when unset)."""
    workloads: tuple[throughput.Workload, ...] = tuple(throughput.WORKLOADS.values())
    """With ``--throughput``: the routes to load."""
    tracing: bool = False
    """The daemon makes OpenTelemetry spans and exports them (to a local sink)."""
    share_cores: bool = False
    """With the stand-in: the daemon shares every CPU with the rest of the bench, rather
    than having its own (:mod:`notifier.bench.cores`)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure the daemon: completion by MQTT against polling, and many held requests",
        description="Start the local stack and a daemon per completion mode, run the same Hello "
        "load against each and print added latency (workflow end to answer received), "
        "throughput, AWS calls, the daemon's CPU time per request and peak memory.",
    )
    bench.add_argument("--requests", type=int, help=f"requests per mode ({DEFAULTS['requests']})")
    bench.add_argument(
        "--concurrency", type=int, help=f"requests in flight ({DEFAULTS['concurrency']})"
    )
    bench.add_argument(
        "--modes", default=",".join(MODES), help="completion modes to run, comma-separated"
    )
    bench.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default="moto",
        help="what runs the workflows: moto (the local stack, really executing them) or "
        "standin (a lightweight StartExecution and completion publish, for high load)",
    )
    bench.add_argument(
        "--wait",
        type=float,
        help="seconds each workflow runs (whole for moto; 1, or 8 with --cut)",
    )
    bench.add_argument(
        "--poll-interval", type=float, default=1.5, help="polling mode's interval in seconds"
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help=f"a small run: {QUICK['requests']} requests at {QUICK['concurrency']} concurrent",
    )
    bench.add_argument(
        "--held",
        type=int,
        metavar="N",
        help="instead: hold N requests at once in one daemon (stand-in backend), then answer",
    )
    bench.add_argument(
        "--cut",
        type=float,
        metavar="SECONDS",
        help="instead: hold --requests (100) requests, cut the daemon's MQTT link for SECONDS "
        "while their workflows end, and report how the fallbacks answered them and how soon "
        "MQTT delivers again",
    )
    bench.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="with --cut: queue (the daemon has its completion queue), sweeps (it has not)",
    )
    bench.add_argument(
        "--sfn-read-rate",
        type=float,
        metavar="R",
        default=DEFAULT_SFN_READ_RATE,
        help="with --cut: the daemon's share of Step Functions reads, DescribeExecution calls "
        f"a second ({DEFAULT_SFN_READ_RATE:g}, its default)",
    )
    bench.add_argument(
        "--throughput",
        action="store_true",
        help="instead: the local stack's own throughput, executions a second per workflow "
        "(moto, MQTT; by default 50 ProcessA at once, then 100 Hello at 50 concurrent)",
    )
    bench.add_argument(
        "--routes",
        default=",".join(throughput.WORKLOADS),
        help="with --throughput: the routes to load, comma-separated",
    )
    bench.add_argument(
        "--warmup", type=int, default=5, help="requests per daemon (per route) before measuring (5)"
    )
    bench.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the daemon under test, as notifier serve --workers (1)",
    )
    bench.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the daemon with py-spy while measuring (raw stacks to FILE, one per "
        "mode: FILE-<mode> with several) and print where its CPU goes",
    )
    bench.add_argument(
        "--tracing",
        action="store_true",
        help="the daemon under test traces (the otel extra), exporting its spans to a sink on "
        "loopback: compare its CPU per request with a run without",
    )
    bench.add_argument(
        "--share-cores",
        action="store_true",
        help="with the stand-in (--backend standin, --held): run the daemon on every CPU, with "
        "the broker, the stand-in and the clients, rather than on CPUs of its own (one per "
        "worker) when there are more",
    )
    bench.add_argument("--json", action="store_true", help="end with one line of JSON")
    bench.add_argument("--plot", type=Path, metavar="FILE", help="write a PNG of the latencies")
    bench.add_argument("--log-dir", type=Path, help="keep the daemons' logs here")
    bench.add_argument("--log-level", default="WARNING")
    quotas.add_arguments(bench)


def options_from(args: argparse.Namespace) -> BenchOptions:
    size = CUT_DEFAULTS if args.cut is not None else QUICK if args.quick else DEFAULTS
    requests = args.requests if args.requests is not None else size["requests"]
    concurrency = args.concurrency if args.concurrency is not None else DEFAULTS["concurrency"]
    if args.wait is None:
        args.wait = float(CUT_DEFAULTS["wait"] if args.cut is not None else 1.0)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise BenchError(f"--modes {args.modes!r}: a comma-separated list of {', '.join(MODES)}")
    if requests < 1 or concurrency < 1:
        raise BenchError("--requests and --concurrency must be at least 1")
    if args.held is not None and args.held < 1:
        raise BenchError("--held must be at least 1")
    if args.cut is not None and args.cut <= 0:
        raise BenchError("--cut must be positive")
    if args.cut is not None and args.held is not None:
        raise BenchError("--cut and --held are separate runs; choose one")
    if args.sfn_read_rate <= 0:
        raise BenchError("--sfn-read-rate must be positive")
    if not 0 <= args.wait <= 60:
        raise BenchError("--wait: between 0 and 60 seconds")
    if args.backend == "moto" and args.wait != int(args.wait):
        raise BenchError("--wait: whole seconds with the moto backend (a Wait state's Seconds)")
    if args.warmup < 0:
        raise BenchError("--warmup must not be negative")
    if args.workers < 1:
        raise BenchError("--workers must be at least 1")
    if args.share_cores and (
        args.cut is not None or args.throughput or (args.backend != "standin" and args.held is None)
    ):
        raise BenchError(
            "--share-cores is for the stand-in (--backend standin, --held): with moto, "
            "everything shares every CPU"
        )
    if args.profile is not None:
        try:
            profile.check_available()
        except profile.ProfileError as exc:
            raise BenchError(str(exc)) from None
    if args.poll_interval <= 0:
        raise BenchError("--poll-interval must be positive")
    if args.tracing and otel_missing():
        raise BenchError(f"--tracing needs OpenTelemetry: {OTEL_EXTRA}")
    if args.throughput and (
        args.held is not None or args.cut is not None or args.backend != "moto" or args.plot
    ):
        raise BenchError("--throughput measures the moto backend alone: no --held, --cut, --plot")
    try:
        workloads = throughput.parse_routes(args.routes)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if args.plot is not None:
        report.check_plotting()
    return BenchOptions(
        requests=requests,
        concurrency=concurrency,
        modes=modes,
        backend=args.backend,
        wait=args.wait,
        poll_interval=args.poll_interval,
        warmup=args.warmup,
        workers=args.workers,
        profile=args.profile,
        log_dir=args.log_dir,
        workloads=workloads,
        tracing=args.tracing,
        share_cores=args.share_cores,
    )


async def run(args: argparse.Namespace, stack: LocalStack | None = None) -> int:
    """``notifier bench``: against ``stack``, or a local stack of its own."""
    try:
        options = options_from(args)
    except report.PlotUnavailableError as exc:
        raise BenchError(str(exc)) from None
    if args.held is not None:
        load.ensure_fd_limit(args.held)
    if stack is not None:
        return await _run(args, options, stack)
    from notifier.local.stack import LocalStack

    try:
        quota_settings = quotas.from_arguments(args)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    settings = LocalStackSettings(
        aws_port=0,
        mqtt_port=0,
        mqtt_tls_port=0,
        mqtt_wss_port=0,
        issuer_port=0,
        log_level="ERROR",
        quotas=quota_settings,
    )
    print("starting the local stack...", flush=True)
    async with LocalStack(settings) as own_stack:
        return await _run(args, options, own_stack)


async def _run(args: argparse.Namespace, options: BenchOptions, stack: LocalStack) -> int:
    if args.cut is not None:
        return await _run_cut(args, options, stack)
    if args.throughput:
        return await run_throughput(args, options, stack)
    # The load, the stand-in and the broker share this process: its own collections would
    # add their pauses to the latencies measured.
    async with ScheduledCollection():
        return await _run_collected(args, options, stack)


async def _run_collected(args: argparse.Namespace, options: BenchOptions, stack: LocalStack) -> int:
    if args.held is not None:
        held = await run_held(stack, args.held, options)
        print(report.held_table(held))
        # Its clients are opened in step with the stand-in's executions starting.
        print_notes(
            ["stand-in"],
            workers=options.workers,
            clients_apart=False,
            daemon_cores=held.daemon_cores,
        )
        for error in held.errors:
            print(f"  a wrong answer: {error}")
        if args.json:
            print(json.dumps({"held": held.figures()}))
        return 0 if held.ok == held.requests else 1
    results = await run_modes(stack, options, progress=True)
    print()
    print(report.modes_table(results))
    print_notes(
        [r.backend for r in results],
        options,
        workers=options.workers,
        daemon_cores=results[0].daemon_cores if results else None,
    )
    for result in results:
        for error in result.errors:
            print(f"  {result.mode}: a wrong answer: {error}")
    for result in results:
        print(f"  {result.mode}: {report.quota_line(result)}")
    looked_up = [r for r in results if r.mode == "mqtt" and r.api_calls.get("DescribeExecution")]
    if any(r.mode == "mqtt" for r in results):
        # Every completion arrives by MQTT: the safety net must not have had to ask.
        calls = sum(r.api_calls.get("DescribeExecution", 0) for r in looked_up)
        verdict = "as it must be" if not calls else "completions went missing: see the daemon's log"
        print(f"  DescribeExecution calls in MQTT mode: {calls} ({verdict})")
    for result in results:
        if result.cpu_split:
            cpu_ms = 1000 * result.cpu_s / result.requests
            print(f"\n{result.mode}: {profile.split_table(Counter(result.cpu_split), cpu_ms)}")
    if args.plot is not None:
        report.plot(results, args.plot, title=f"notifier: Hello, {machine()}")
        print(f"plot written to {args.plot}")
    if args.json:
        print(json.dumps({"modes": {r.mode: r.figures() for r in results}}))
    return 0 if all(r.ok == r.requests for r in results) and not looked_up else 1


async def _run_cut(args: argparse.Namespace, options: BenchOptions, stack: LocalStack) -> int:
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if not variants or any(v not in VARIANTS for v in variants):
        raise BenchError(f"--variants {args.variants!r}: a comma-separated list of queue, sweeps")
    cut = CutOptions(
        cut=args.cut, requests=options.requests, wait=int(options.wait), variants=variants
    )

    def settings_for(variant: str) -> Settings:
        settings = daemon_settings(stack, "mqtt", options, options.requests, None)
        daemon = dataclasses.replace(
            settings.daemon,
            instance_id=f"bench-cut-{variant}-{secrets.token_hex(4)}",
            sfn_read_rate=args.sfn_read_rate,
        )
        return dataclasses.replace(settings, daemon=daemon)

    with _log_dir(options) as logs, PublishClock(stack.access) as clock:
        results = await run_cut(stack, cut, settings_for, clock.stopped_at, logs)
    print()
    print(report.cut_table(results))
    print(f"  machine: {machine()}; everything (stack, daemon, load) on it")
    print(
        "  stop to answer: the workflow's completion reaching the broker (its end) to the "
        f"answer read by the client; sfn_read_rate {args.sfn_read_rate:g}"
    )
    if "sweeps" in variants:
        bound = options.requests / args.sfn_read_rate
        print(
            f"  sweeps: the budget bound for {options.requests} held at "
            f"{args.sfn_read_rate:g} DescribeExecution a second is {bound:.0f} s (held / rate) "
            "from the later of a workflow's end and the cut being noticed"
        )
    for result in results:
        for error in result.errors:
            print(f"  {result.variant}: a wrong answer: {error}")
    if args.json:
        print(json.dumps({"cut": {r.variant: r.figures() for r in results}}))
    return 0 if all(r.ok == r.requests for r in results) else 1


async def run_throughput(args: argparse.Namespace, options: BenchOptions, stack: LocalStack) -> int:
    widest = max(args.concurrency or w.concurrency for w in options.workloads)
    with _log_dir(options) as logs, _open_log(logs / "daemon-throughput.log") as log:
        results = await throughput.measure(
            stack,
            options.workloads,
            daemon_settings(stack, "mqtt", options, widest, None),
            log,
            requests=args.requests,
            concurrency=args.concurrency,
            warmup=options.warmup,
            progress=True,
        )
    print()
    print(throughput.table(results))
    for note in throughput.notes(machine()):
        print(f"  {note}")
    for result in results:
        for error in result.errors:
            print(f"  {result.route}: a wrong answer: {error}")
    if args.json:
        print(json.dumps({"throughput": {r.route: r.figures() for r in results}}))
    return 0 if all(r.figures()["ok"] == r.requests for r in results) else 1


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read_lines("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def print_notes(
    backends: list[str],
    options: BenchOptions | None = None,
    *,
    workers: int = 1,
    clients_apart: bool = True,
    daemon_cores: frozenset[int] | None = None,
) -> None:
    broker = "the broker and the stand-in" if "stand-in" in backends else "the broker"
    clients_in = "a process of their own" if clients_apart else "this one"
    notes = [
        f"machine: {machine()}; everything on it: the daemon in a process of its own, "
        f"{broker} in this one, the HTTP clients in {clients_in}",
        "added latency: workflow end (its completion reaching the MQTT broker) to the whole "
        "answer read by the client, both on this machine's wall clock",
    ]
    if "moto" in backends:
        notes.append(
            "backend moto: the local stack really runs Hello (Wait, Lambda task, IoT publish); "
            "moto's stopDate comes ~25 ms after the publish, in whole ms, so it is not used"
        )
    if "stand-in" in backends:
        notes.append(
            "backend stand-in: StartExecution and the completion publish come from a "
            "lightweight stand-in (notifier/local/sfn_standin.py), not from moto; the daemon "
            "and broker are the real ones"
        )
    if options is not None and "poll" in options.modes:
        notes.append(
            f"poll: no MQTT, DescribeExecution of every held request every "
            f"{options.poll_interval:g} s (the interval of the polling design it replaces)"
        )
    notes.append("CPU ms/req and peak RSS: the daemon process alone (/proc), threads included")
    if daemon_cores is not None:
        notes.append(
            f"CPUs: the daemon alone on {','.join(map(str, sorted(daemon_cores)))}; the broker, "
            "the stand-in, the clients and the local stack's AWS endpoint on the others "
            "(--share-cores: everything on every CPU)"
        )
    if workers > 1:
        notes.append(
            f"daemon: {workers} worker processes sharing its port (notifier serve --workers); "
            "CPU, peak RSS and AWS calls summed over them and their supervisor"
        )
    for note in notes:
        print(f"  {note}")


async def run_modes(
    stack: LocalStack, options: BenchOptions, *, progress: bool = False
) -> list[ModeResult]:
    """Each of ``options.modes`` in turn, each with a daemon of its own."""
    from notifier.local.sfn_standin import StepFunctionsStandIn

    results = []
    # With moto, the local stack needs every CPU to run the workflows.
    core_split = _core_split(options) if options.backend == "standin" else None
    daemon_cores = core_split.daemon if core_split is not None else None
    with (
        _log_dir(options) as logs,
        PublishClock(stack.access) as clock,
        _rest_pinned(core_split),
    ):
        for mode in options.modes:
            if progress:
                print(
                    f"{mode}: {options.requests} requests, {options.concurrency} concurrent, "
                    f"backend {BACKENDS[options.backend]}...",
                    flush=True,
                )
            async with contextlib.AsyncExitStack() as exits:
                stopped_at: Callable[[str], float | None] = clock.stopped_at
                aws = None
                watch = QuotaWatch(stack)
                if options.backend == "standin":
                    standin = StepFunctionsStandIn(
                        stack.settings.host,
                        stack.broker,
                        stack.settings.topic_root,
                        quotas=stack.settings.quotas,
                    )
                    await exits.enter_async_context(standin)
                    stopped_at, aws = standin.stopped_at, _standin_aws(stack, standin)
                    watch = QuotaWatch(stack, standin)
                log = exits.enter_context(_open_log(logs / f"daemon-{mode}.log"))
                settings = daemon_settings(stack, mode, options, options.concurrency, aws)
                results.append(
                    await _measure(mode, settings, options, log, stopped_at, watch, daemon_cores)
                )
    return results


def _core_split(options: BenchOptions) -> cores.CoreSplit | None:
    """CPUs of its own for the daemon that carries the stand-in's load, unless shared."""
    return None if options.share_cores else cores.split(options.workers)


def _rest_pinned(core_split: cores.CoreSplit | None) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext() if core_split is None else cores.pinned(core_split.rest)


async def _measure(
    mode: str,
    settings: Settings,
    options: BenchOptions,
    log: IO[bytes],
    stopped_at: Callable[[str], float | None],
    watch: QuotaWatch,
    daemon_cores: frozenset[int] | None,
) -> ModeResult:
    async with contextlib.AsyncExitStack() as tracing:
        sink = await tracing.enter_async_context(OtlpSink()) if options.tracing else None
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url} if sink is not None else {}
        result = await _measure_mode(
            mode, settings, options, log, stopped_at, watch, env, daemon_cores
        )
        if sink is not None:
            result.tracing_exports = sink.exports
        return result


async def _measure_mode(
    mode: str,
    settings: Settings,
    options: BenchOptions,
    log: IO[bytes],
    stopped_at: Callable[[str], float | None],
    watch: QuotaWatch,
    env: dict[str, str],
    daemon_cores: frozenset[int] | None,
) -> ModeResult:
    daemon_process = DaemonProcess(settings, log, options.workers, env, daemon_cores)
    async with daemon_process as daemon, aiohttp.ClientSession() as http:
        if options.warmup:
            await load_process.closed_loop(
                LoadRun(daemon.url, options.warmup, options.warmup, options.wait, HOLD,
                        first_index=-options.warmup)
            )  # fmt: skip
        calls_before = await _api_calls(http, daemon)
        profile_path = _profile_path(options, mode)
        async with contextlib.AsyncExitStack() as profiling:
            if profile_path is not None:
                await profiling.enter_async_context(profile.recording(daemon.pid, profile_path))
            # The window includes the load process's start, a fraction of a second in
            # which the daemon only idles.
            await watch.begin()
            cpu_before = daemon.cpu_seconds()
            measured = await load_process.closed_loop(
                LoadRun(daemon.url, options.requests, options.concurrency, options.wait, HOLD)
            )
            cpu = daemon.cpu_seconds() - cpu_before
            quota_report = await watch.end()
        calls_after = await _api_calls(http, daemon)
        peak_rss = daemon.peak_rss_mb()
    samples = measured.samples
    return ModeResult(
        mode=mode,
        backend=BACKENDS[options.backend],
        concurrency=options.concurrency,
        requests=options.requests,
        ok=sum(s.ok for s in samples),
        latencies_ms=_latencies(samples, stopped_at),
        elapsed_s=measured.elapsed_s,
        api_calls={
            op: n - calls_before.get(op, 0)
            for op, n in calls_after.items()
            if n - calls_before.get(op, 0)
        },
        cpu_s=cpu,
        peak_rss_mb=peak_rss,
        errors=[s.error for s in samples if s.error][:5],
        cpu_split=dict(profile.read_split(profile_path)) if profile_path else {},
        completed_via=dict(Counter(s.via or NOT_COMPLETED for s in samples)),
        quotas=quota_report,
        daemon_cores=daemon_cores,
    )


def _profile_path(options: BenchOptions, mode: str) -> Path | None:
    path = options.profile
    if path is None or len(options.modes) == 1:
        return path
    return path.with_name(f"{path.stem}-{mode}{path.suffix}")


async def run_held(stack: LocalStack, requests: int, options: BenchOptions) -> HeldResult:
    """``requests`` requests held at once by one daemon (stand-in backend), then released
    at ``RELEASE_RATE`` completions a second."""
    from notifier.local.sfn_standin import StepFunctionsStandIn

    standin = StepFunctionsStandIn(
        stack.settings.host,
        stack.broker,
        stack.settings.topic_root,
        gated=True,
        quotas=stack.settings.quotas,
    )
    core_split = _core_split(options)
    daemon_cores = core_split.daemon if core_split is not None else None
    with (
        _log_dir(options) as logs,
        _open_log(logs / "daemon-held.log") as log,
        _rest_pinned(core_split),
    ):
        async with standin:
            aws = _standin_aws(stack, standin)
            release_rate = min(requests, RELEASE_RATE)
            settings = daemon_settings(stack, "mqtt", options, requests, aws, release_rate)
            daemon_process = DaemonProcess(settings, log, options.workers, cores=daemon_cores)
            async with daemon_process as daemon, load.client(requests) as http:
                cpu_before = daemon.cpu_seconds()
                tasks = await load.hold_all(
                    http, daemon.url, requests=requests, started=lambda: standin.started,
                    hold=HOLD,
                )  # fmt: skip
                held_at_once = await _held(http, daemon)
                standin.release(max(1.0, requests / RELEASE_RATE))
                samples = await asyncio.gather(*tasks)
                cpu = daemon.cpu_seconds() - cpu_before
                peak_rss = daemon.peak_rss_mb()
    return HeldResult(
        backend="stand-in",
        requests=requests,
        held_at_once=held_at_once,
        ok=sum(s.ok for s in samples),
        latencies_ms=_latencies(samples, standin.stopped_at),
        cpu_s=cpu,
        peak_rss_mb=peak_rss,
        errors=[s.error for s in samples if s.error][:5],
        daemon_cores=daemon_cores,
    )


def daemon_settings(
    stack: LocalStack,
    mode: str,
    options: BenchOptions,
    held: int,
    aws: AwsSettings | None,
    peak: float | None = None,
) -> Settings:
    """notifier/local/local.toml against ``stack`` (NOTIFIER_* overrides apply), on a free
    port, a new instance id, room for ``held`` requests; ``aws`` (the stand-in) instead of
    moto; its MQTT connections sized for ``peak`` completions a second (None: the closed
    loop's, concurrency / wait)."""
    bench_env = {
        "NOTIFIER_HTTP_PORT": "0",
        "NOTIFIER_HTTP_MAX_HELD": str(max(1000, held + options.warmup + 100)),
        "NOTIFIER_DAEMON_INSTANCE_ID": f"bench-{mode}-{secrets.token_hex(4)}",
        "NOTIFIER_DAEMON_COMPLETION": mode,
        "NOTIFIER_DAEMON_POLL_INTERVAL": str(options.poll_interval),
        # Every held request polled once per interval, as the polling design did.
        "NOTIFIER_DAEMON_SFN_READ_RATE": str(max(20.0, 2 * held / options.poll_interval)),
    }
    # Sized for the rate offered over the workers, as an operator sizes [mqtt]
    # peak_completions_per_second (the environment may say).
    if peak is None:
        peak = options.concurrency / max(options.wait, 0.1)
    offered = peak / options.workers
    sized = {"NOTIFIER_MQTT_PEAK_COMPLETIONS_PER_SECOND": str(math.ceil(offered))}
    settings = local_settings(stack, env={**sized, **os.environ, **bench_env})
    # The daemon's own work only: no status feed, no approval queue to poll.
    settings = dataclasses.replace(
        settings, dashboard=dataclasses.replace(settings.dashboard, enabled=False)
    )
    if mode == "poll" or aws is not None:
        # Polling alone, as the design it replaces; the stand-in has no queues.
        settings = dataclasses.replace(settings, sqs=SqsSettings())
    if aws is not None:
        settings = dataclasses.replace(settings, aws=aws)
    if options.tracing:
        settings = dataclasses.replace(
            settings, tracing=TracingSettings(enabled=True, service_name="notifier-bench")
        )
    return settings


def _standin_aws(stack: LocalStack, standin: StepFunctionsStandIn) -> AwsSettings:
    return dataclasses.replace(stack.aws_settings, endpoint_url=standin.url)


async def _api_calls(http: aiohttp.ClientSession, daemon: DaemonProcess) -> dict[str, int]:
    """AWS calls by operation, summed over the daemon's instances (its workers)."""
    total: dict[str, int] = {}
    for url in daemon.instance_urls:
        async with http.get(f"{url}/metrics") as response:
            for operation, count in api_calls(await response.text()).items():
                total[operation] = total.get(operation, 0) + count
    return total


async def _held(http: aiohttp.ClientSession, daemon: DaemonProcess) -> int:
    held = 0
    for url in daemon.instance_urls:
        async with http.get(f"{url}/readyz") as response:
            held += int((await response.json())["held"])
    return held


def _latencies(
    samples: list[load.Sample], stopped_at: Callable[[str], float | None]
) -> list[float]:
    latencies = []
    for sample in samples:
        stop = stopped_at(sample.txn_id) if sample.ok and sample.txn_id else None
        if stop is not None:
            latencies.append((sample.received_at - stop) * 1000)
    return latencies


@contextlib.contextmanager
def _log_dir(options: BenchOptions) -> Iterator[Path]:
    if options.log_dir is not None:
        options.log_dir.mkdir(parents=True, exist_ok=True)
        yield options.log_dir
        return
    with tempfile.TemporaryDirectory(prefix="notifier-bench-") as directory:
        yield Path(directory)


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


class PublishClock:
    """When each workflow's completion reached the broker, by execution name, while in use.

    Completions are the publishes on ``<root>/<subtopic>/<name>``; the first one counts (the
    status forwarder may publish the same completion later).
    """

    def __init__(self, access: AccessControl) -> None:
        self._access = access
        self._stopped_at: dict[str, float] = {}

    def __enter__(self) -> PublishClock:
        self._access.on_publish = self._record
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._access.on_publish = None

    def _record(self, topic: str) -> None:
        now = time.time()
        levels = topic.split("/")
        if len(levels) == 3 and levels[1] != STATUS_SUBTOPIC:
            self._stopped_at.setdefault(levels[2], now)

    def stopped_at(self, name: str) -> float | None:
        return self._stopped_at.get(name)
