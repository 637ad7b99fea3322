"""The AWS endpoint's process loads what it serves with, not the rest of the local stack:
every test session starts one or more, and each module loaded there is CPU at every start."""

from __future__ import annotations

import ast
import subprocess  # nosec B404  # runs this interpreter on fixed code
import sys
from pathlib import Path

import notifier.local.endpoint

# The broker and the daemon's asyncio AWS clients run in the stack's own process.
NOT_FOR_THE_ENDPOINT = ("amqtt", "aiobotocore", "aiohttp")


def endpoint_modules() -> list[str]:
    """The modules the endpoint's ``serve`` imports from ``notifier.local``."""
    tree = ast.parse(Path(notifier.local.endpoint.__file__).read_text(encoding="utf-8"))
    serve = next(
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "serve"
    )
    found = []
    for node in ast.walk(serve):
        if isinstance(node, ast.ImportFrom) and node.module == "notifier.local":
            found += [f"notifier.local.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("notifier."):
            found.append(str(node.module))
    return found


def test_the_endpoint_loads_neither_the_broker_nor_the_daemon_s_clients() -> None:
    modules = endpoint_modules()
    assert "notifier.local.iot_core" in modules and len(modules) > 10
    probe = (
        "import sys\n"
        f"for name in {['notifier.local.endpoint', *modules]!r}:\n"
        "    __import__(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(  # nosec B603  # this interpreter, fixed code
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(done.stdout.split())
    assert "moto" in loaded  # the probe loads what the endpoint does
    assert loaded.isdisjoint(NOT_FOR_THE_ENDPOINT), loaded & set(NOT_FOR_THE_ENDPOINT)
