"""A local Lambda worker imports what the function could import in AWS, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from pathlib import Path
from notifier.local.lambda_imports import confine
confine(Path(sys.argv[1]))
import json, boto3, botocore.session  # the standard library and the runtime's boto3
import jwt
print(jwt.__file__)
try:
    import yaml  # installed here, not in the function's zip, not in AWS's runtime
except ImportError as exc:
    print("refused:", exc)
"""


def probe(code_dir: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(code_dir)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_module_the_zip_carries_comes_from_the_zip(tmp_path: Path) -> None:
    (tmp_path / "jwt").mkdir()
    (tmp_path / "jwt" / "__init__.py").write_text("")
    imported, refused = probe(tmp_path)
    assert imported == str(tmp_path / "jwt" / "__init__.py")
    assert refused.startswith("refused: No module named 'yaml' (not in the function's zip")


def test_a_module_the_zip_lacks_is_not_taken_from_the_local_environment(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "No module named 'jwt' (not in the function's zip" in result.stderr
