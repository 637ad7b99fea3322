"""The stack's template, loaded and packaged as ``notifier deploy`` does, for the tests of
the template and of the packaging."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.ops.package import load_template, package_template, source_dir

BUCKET = "artifacts-bucket"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def packaged(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    return package_template(template, source_dir(), BUCKET)


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == type_}
