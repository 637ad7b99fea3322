"""What a function's code may import in a local Lambda worker: what it could import in AWS.

AWS's Python runtime offers a function its own zip, the standard library, and boto3 with the
libraries boto3 needs; nothing else. The local workers run in the environment of the local
stack, where much more is installed (PyJWT among it), so a function that forgot to carry a
dependency would work here and fail in AWS. :func:`confine` makes every other top-level
import fail as it would there, and makes sure a module the zip carries is taken from the zip.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

RUNTIME_PACKAGES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}
)
"""Top-level modules of AWS Lambda's Python runtime besides the standard library."""


class ZipOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds top-level modules in the function's code directory first; refuses those neither
    there, nor in the standard library, nor in :data:`RUNTIME_PACKAGES`."""

    def __init__(self, code_dir: Path) -> None:
        self.code_dir = str(code_dir)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None:
            return None  # a submodule: found beside its package
        spec = importlib.machinery.PathFinder.find_spec(fullname, [self.code_dir])
        if spec is not None:
            return spec
        if fullname in sys.stdlib_module_names or fullname in RUNTIME_PACKAGES:
            return None
        raise ModuleNotFoundError(
            f"No module named {fullname!r} (not in the function's zip, and AWS Lambda's "
            "Python runtime has only the standard library and boto3)",
            name=fullname,
        )


def confine(code_dir: Path) -> None:
    """From now on, imports in this process resolve as in a Lambda function of ``code_dir``."""
    sys.meta_path.insert(0, ZipOnlyFinder(code_dir))
