"""The distribution: a plain wheel carries the daemon and what it reads, not the local stack."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCAL_STACK = {"moto", "amqtt"}
NOT_SOURCE = (".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the source tree (build/, *.egg-info): a copy of it of its own, so
    # that workers running this module at once do not build in each other's way.
    source = tmp_path_factory.mktemp("source") / "notifier"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(out), str(source)],
        check=True,
        timeout=120,
    )
    (built,) = out.glob("notifier-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def requirements(wheel: zipfile.ZipFile) -> list[str]:
    (metadata,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return Parser().parsestr(wheel.read(metadata).decode()).get_all("Requires-Dist") or []


def name_of(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("=")[0].split(">")[0].strip().lower()


def test_the_local_stack_is_only_in_the_local_extra(wheel: zipfile.ZipFile) -> None:
    plain = {name_of(r) for r in requirements(wheel) if "extra ==" not in r}
    local = {name_of(r) for r in requirements(wheel) if 'extra == "local"' in r}
    assert plain >= {"aiohttp", "aiobotocore", "awscrt", "awsiotsdk"}
    assert not plain & LOCAL_STACK
    assert local == LOCAL_STACK


def test_what_the_package_reads_ships_inside_it(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "notifier/local/local.toml" in names
    assert {"index.html", "dashboard.js", "dashboard.css"} <= {
        Path(n).name for n in names if n.startswith("notifier/dashboard/static/")
    }
    assert "statemachines/template.yaml" in names
    assert not any(n.startswith(("tests/", "config/")) for n in names)
