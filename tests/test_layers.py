"""The packages' layers: imports point one way, down, and the daemon never needs the local
stack, the benchmark or the type stubs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "notifier"

# Lowest first: a module imports modules of its own layer or below.
LAYERS = [
    {
        "notifier",
        "config",
        "config_checks",
        "config_loader",
        "loopback",
        "logs",
        "metrics",
        "lifecycle",
        "token_bucket",
        "apikeys",
        "topics",
        "tracing",
        "identity",
    },
    {"aws"},
    {"requests"},
    {"sources"},
    {"app"},
    {"dashboard"},
    {"routes"},
    {"daemon"},
    {"ops", "local", "bench"},
    {"cli"},
]
# The daemon runs with systemd's notifications and the scheduled collection, tooling that
# the worker supervisor (ops) also uses.
UPWARD = {
    ("notifier.daemon", "notifier.ops.systemd"),
    ("notifier.daemon", "notifier.ops.gc_schedule"),
}
ONLY_FOR_TOOLS = ("notifier.local", "notifier.bench")
TOOLS = ("notifier.local", "notifier.bench", "notifier.cli")


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "notifier"
    return next(i for i, names in enumerate(LAYERS) if part in names)


def imports() -> list[tuple[str, str]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                # "from notifier.app import handlers" imports notifier.app.handlers
                targets = [n for n in names if _is_module(n)] or [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found += [(module, t) for t in targets if t.split(".")[0] == "notifier"]
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{importer} imports {imported}"
        for importer, imported in imports()
        if layer(imported) > layer(importer) and (importer, imported) not in UPWARD
    ]
    assert not upward


def test_only_the_tools_import_the_local_stack_or_the_benchmark() -> None:
    found = [
        f"{importer} imports {imported}"
        for importer, imported in imports()
        if imported.startswith(ONLY_FOR_TOOLS) and not importer.startswith(TOOLS)
    ]
    assert not found


def test_the_check_sees_imports() -> None:
    found = set(imports())
    assert ("notifier.app.wiring", "notifier.requests.waiters") in found
    assert ("notifier.cli", "notifier.local.settings") in found
    assert ("notifier.routes", "notifier.app.handlers") in found


# Every module imported with the AWS clients' stubs (development dependencies) missing.
WITHOUT_STUBS = """
import importlib, pkgutil, sys

class NoStubs:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("types_aiobotocore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoStubs())
import iotauth, notifier
modules = [m.name for package in (iotauth, notifier)
           for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in modules:
    importlib.import_module(name)
print(len(modules))
"""


def test_every_module_imports_without_the_type_stubs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_STUBS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100  # every module, not a few
