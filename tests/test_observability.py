"""What operators wire to the daemon: its /metrics as promtool reads them, and the alert rules
and Grafana board in config/, which must name only metrics a running daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess  # nosec B404  # promtool, a fixed command
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from notifier.app.state import METRICS
from notifier.daemon import Daemon
from tests.support.daemons import DaemonFactory
from tests.support.eventually import eventually

CONFIG = Path(__file__).resolve().parent.parent / "config"
ALERTS = CONFIG / "alerts.yml"
ALERT_TESTS = CONFIG / "prometheus-tests.yml"
DASHBOARD = CONFIG / "grafana-dashboard.json"
METRIC = re.compile(r"\b((?:notifier|process)_[a-zA-Z0-9_]+)")
# Grafana's variables, as a query would have them filled in
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".+"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is needed (Debian's prometheus package; `make test` installs it)")
    return subprocess.run(  # nosec B603  # promtool, fixed arguments
        [found, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
    )


def dashboard_queries() -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(json.loads(DASHBOARD.read_text())))


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_names(text: str) -> set[str]:
    """Metric names with samples in a scrape, and the family names of those samples."""
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text, re.M))
    return names | {re.sub(r"_(bucket|sum|count|total|created|info)$", "", n) for n in names}


async def scrape(http: aiohttp.ClientSession, daemon: Daemon) -> str:
    async with http.get(f"{daemon.url}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_metrics_are_what_promtool_accepts(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    text = await scrape(http, daemon)
    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"^process_open_fds \d", text, re.M)
    assert re.search(r'^notifier_build_info\{version="[^"]+"\} 1\.0$', text, re.M)


async def test_the_board_and_the_alerts_name_only_metrics_a_fresh_daemon_exports(
    daemon_factory: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_factory() as daemon:
        # the board, at once
        have = exported_names(await scrape(http, daemon))
        queries = dashboard_queries()
        named = {name for query in queries for name in METRIC.findall(query)}
        assert len(queries) > 10 and named
        assert sorted(named - have) == []
        # the alerts, once the daemon has read its dead-letter queue
        registry = daemon.app[METRICS].registry
        await eventually(
            lambda: registry.get_sample_value("notifier_dead_letter_messages", {"queue": "status"})
            is not None
        )
        have = exported_names(await scrape(http, daemon))
        alerted = {name for rule in alert_rules() for name in METRIC.findall(rule["expr"])}
        assert sorted(alerted - have) == []


def test_the_board_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = []
    for query in dashboard_queries():
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        queries.append(query)
    rules = {
        "groups": [
            {"name": "board", "rules": [{"record": f"board:q{n}", "expr": q} for n, q in
                                        enumerate(queries)]}  # fmt: skip
        ]
    }
    path = tmp_path / "board-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rules_pass_their_unit_tests_one_for_each_alert() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in cases
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == {rule["alert"] for rule in alert_rules()}
