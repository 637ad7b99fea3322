"""bandit in ``make lint``: a finding fails it, and each accepted one says where and why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("notifier", "iotauth", "statemachines")
BANDIT = Path(sys.executable).parent / "bandit"
NOSEC = re.compile(r"#\s*nosec\b(?P<rest>.*)$")
JUSTIFIED = re.compile(r" B\d{3}(, ?B\d{3})*  # \S.*")
"""``# nosec B603  # why``: the test accepted, then the one-line reason."""


def bandit(*paths: Path) -> subprocess.CompletedProcess[str]:
    """bandit as make lint runs it."""
    command = [str(BANDIT), "--quiet", "--configfile", str(ROOT / "pyproject.toml"), "--recursive"]
    return subprocess.run(
        [*command, *map(str, paths)], capture_output=True, text=True, check=False, cwd=ROOT
    )


def test_every_accepted_finding_names_its_test_and_gives_a_reason() -> None:
    marked = []
    for directory in SCANNED:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if found := NOSEC.search(line):
                    marked.append(f"{path.relative_to(ROOT)}:{number}")
                    assert JUSTIFIED.fullmatch(found["rest"]), f"{marked[-1]}: {line.strip()}"
    assert marked  # the check above looked at something


def test_a_new_finding_fails_the_lint(tmp_path: Path) -> None:
    """One risky file, with the lint's configuration (make lint scans the code itself)."""
    risky = tmp_path / "risky.py"
    risky.write_text("import subprocess\n\nsubprocess.run('ls ' + input(), shell=True)\n")
    found = bandit(risky)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "B602" in found.stdout  # subprocess with shell=True
