from __future__ import annotations

from notifier.metrics import Metrics


def test_each_daemon_has_its_own_registry_with_prefixed_metrics() -> None:
    first, second = Metrics(), Metrics()
    first.requests.labels(route="p1", status="SUCCEEDED").inc()
    first.completion_latency.labels(source="mqtt").observe(0.002)
    first.aws_calls.labels(operation="StartExecution").inc(2)
    text = first.render().decode()
    assert 'notifier_requests_total{route="p1",status="SUCCEEDED"} 1.0' in text
    assert 'notifier_completion_latency_seconds_bucket{le="0.0025",source="mqtt"} 1.0' in text
    assert 'notifier_aws_api_calls_total{operation="StartExecution"} 2.0' in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(name.startswith(("notifier_", "process_", "python_")) for name in names)
    assert "process_open_fds" in names and "process_max_fds" in names
    assert 'notifier_build_info{version="' in text
    assert "notifier_requests_total{" not in second.render().decode()
