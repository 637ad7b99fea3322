"""Generated requests against the daemon, checked against its own OpenAPI document.

schemathesis runs as a separate process (it is synchronous, and the local stack's broker
needs this event loop to keep turning). Every response must be documented for its operation
(an unexpected 500 is not), with the documented content type and schema.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from notifier.apikeys import hash_key, new_key
from notifier.config import ApiKeySettings
from notifier.daemon import Daemon
from notifier.local.daemon_config import local_settings
from notifier.local.stack import LocalStack
from tests.support.daemons import requiring_api_key

CHECKS = "status_code_conformance,content_type_conformance,response_schema_conformance"


async def test_generated_requests_get_documented_answers(stack: LocalStack, tmp_path: Path) -> None:
    key = new_key()
    base = local_settings(
        stack,
        env={
            "NOTIFIER_HTTP_PORT": "0",
            "NOTIFIER_DAEMON_INSTANCE_ID": "fuzz",
            # Held requests end at once: the run is about answers, not about waiting.
            "NOTIFIER_HTTP_DEFAULT_WAIT": "0",
            "NOTIFIER_HTTP_MAX_WAIT": "0.2",
            # Reads at the local stack's whole DescribeExecution refill, not the default
            # share of an account's: the run is about answers, not about pacing.
            "NOTIFIER_DAEMON_SFN_READ_RATE": "15",
        },
    )
    settings = requiring_api_key(
        base,
        "fuzz",
        ApiKeySettings(
            sha256=hash_key(key), rate=1000, burst=1000, max_held=1000, roles=("approver", "admin")
        ),
    )
    async with Daemon(settings) as daemon:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{daemon.url}/openapi.json",
            "--checks", CHECKS,
            # The coverage phase trips over a hypothesis internal error on Python 3.11.
            "--phases", "examples,fuzzing,stateful",
            "--max-examples", "25",
            "--seed", "1",
            "--workers", "2",
            "--header", f"x-api-key: {key}",
            "--exclude-path", "/events",  # a stream that never ends by itself
            "--request-timeout", "30",
            "--report", "junit",
            "--report-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # it keeps a cache in the working directory
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 300)
        report = output.decode()
    assert process.returncode == 0, report[-6000:]
    assert " passed" in report and "failure" not in report, report[-3000:]
