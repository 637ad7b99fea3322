"""The documentation's link check: it passes on the project's own pages and fails on a dead
link or anchor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check_doc_links.py"


def run(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *map(str, files)], capture_output=True, text=True, timeout=60
    )


def test_every_link_of_the_readme_and_docs_resolves() -> None:
    result = run()
    assert result.returncode == 0, result.stdout


def test_a_missing_file_and_a_missing_heading_are_dead(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading's part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[fine](other.md#a-code-headings-part) [self](#page)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    result = run(page)
    assert result.returncode == 1
    assert "missing.md" in result.stdout and "#nowhere" in result.stdout
    assert "ignored.md" not in result.stdout and "#page" not in result.stdout
