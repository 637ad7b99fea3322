"""Packaging the stack: the loader of CloudFormation's short tags, state machines and
Lambda code turned into what CloudFormation deploys (definition strings, zips in S3 with
what they vendor), deterministic zips, and the template's lint."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier.ops import package
from notifier.ops.package import CloudFormationLoader, package_template, source_dir
from tests.support.template import BUCKET, resources_of


def test_loader_reads_short_tags_as_long_form() -> None:
    text = """
    A: !Ref Stage
    B: !GetAtt Bucket.Arn
    C: !Sub "x-${Stage}"
    D: !Sub ["${A}", {A: !Ref Stage}]
    E: !If [IsProd, !Join ["", [a, b]], !Ref AWS::NoValue]
    F: !Condition IsProd
    G: !GetAtt [Bucket, Arn]
    H: 2010-09-09
    """
    assert yaml.load(text, Loader=CloudFormationLoader) == {
        "A": {"Ref": "Stage"},
        "B": {"Fn::GetAtt": ["Bucket", "Arn"]},
        "C": {"Fn::Sub": "x-${Stage}"},
        "D": {"Fn::Sub": ["${A}", {"A": {"Ref": "Stage"}}]},
        "E": {"Fn::If": ["IsProd", {"Fn::Join": ["", ["a", "b"]]}, {"Ref": "AWS::NoValue"}]},
        "F": {"Condition": "IsProd"},
        "G": {"Fn::GetAtt": ["Bucket", "Arn"]},
        "H": "2010-09-09",
    }


def test_every_state_machine_gets_a_definition_string(packaged: tuple) -> None:
    template, _ = packaged
    for name, machine in resources_of(template, "AWS::StepFunctions::StateMachine").items():
        properties = machine["Properties"]
        for source_only in ("DefinitionS3Location", "DefinitionSubstitutions", "Definition"):
            assert source_only not in properties, (name, source_only)
        text = properties["DefinitionString"]["Fn::Sub"]
        assert isinstance(text, str)
        assert "$$.Execution.Name" in text  # the context object survives Fn::Sub
        references = set(re.findall(r"\$\{([^}]+)\}", text))
        known = set(template["Resources"]) | set(template["Parameters"])
        assert {reference.split(".")[0] for reference in references} <= known, references
        assert json.loads(text)["States"]


def test_every_function_gets_s3_code(packaged: tuple) -> None:
    template, artifacts = packaged
    functions = resources_of(template, "AWS::Lambda::Function")
    # 6 ProcessA steps, Hello, 5 QC, Archive metadata, token issuer and authorizer, forwarder
    assert len(functions) == 16
    for function in functions.values():
        properties = function["Properties"]
        assert properties["Runtime"] == "python3.12"
        module_name, _, handler = properties["Handler"].rpartition(".")
        code = properties["Code"]
        assert code["S3Bucket"] == BUCKET
        data = artifacts[code["S3Key"]]
        assert hashlib.sha256(data).hexdigest() in code["S3Key"]
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            module = archive.read(module_name.replace(".", "/") + ".py").decode()
        assert f"def {handler}(" in module


def test_a_package_is_zipped_under_its_name(packaged: tuple) -> None:
    template, artifacts = packaged
    issuer = template["Resources"]["TokenIssuerFunction"]["Properties"]
    assert issuer["Handler"] == "iotauth.issuer.handler"
    with zipfile.ZipFile(io.BytesIO(artifacts[issuer["Code"]["S3Key"]])) as archive:
        names = archive.namelist()
    assert "iotauth/__init__.py" in names and "iotauth/tokens.py" in names
    assert "iotauth/requirements.txt" not in names
    # PyJWT, vendored from the installed distribution: AWS's runtime does not have it.
    jwt_version = importlib.metadata.version("PyJWT")
    assert "jwt/__init__.py" in names and "jwt/api_jwt.py" in names
    assert f"pyjwt-{jwt_version}.dist-info/licenses/LICENSE" in names
    vendored = {name.split("/")[0] for name in names} - {"iotauth"}
    assert vendored == {"jwt", f"pyjwt-{jwt_version}.dist-info"}
    assert not [name for name in names if name.endswith((".pyc", ".so", "RECORD"))]


def test_vendoring_refuses_what_it_cannot_carry(tmp_path: Path) -> None:
    code = tmp_path / "fn"
    code.mkdir()
    (code / "app.py").write_text("import jwt\n")
    (code / "requirements.txt").write_text("not-installed-anywhere\n")
    with pytest.raises(ValueError, match="not installed"):
        package.zip_code(code)
    (code / "requirements.txt").write_text("PyJWT>=2\n")
    with pytest.raises(ValueError, match="distribution name only"):
        package.zip_code(code)
    (code / "requirements.txt").write_text("# compiled: no\ncryptography\n")
    with pytest.raises(ValueError, match="not pure Python"):
        package.zip_code(code)


def test_zips_are_deterministic_and_clean(tmp_path: Path) -> None:
    code = tmp_path / "fn"
    (code / "pkg" / "__pycache__").mkdir(parents=True)
    (code / "app.py").write_text("def handler(event, context):\n    return event\n")
    (code / "pkg" / "util.py").write_text("X = 1\n")
    (code / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"junk")
    key, data = package.zip_code(code)
    (code / "app.py").touch()  # a new mtime changes nothing
    assert package.zip_code(code) == (key, data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["app.py", "pkg/util.py"]
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_packaging_leaves_the_source_alone(template: dict[str, Any]) -> None:
    before = json.dumps(template, sort_keys=True)
    once, _ = package_template(template, source_dir(), BUCKET)
    assert json.dumps(template, sort_keys=True) == before
    assert package_template(once, source_dir(), BUCKET) == (once, {})


def test_lint_reports_problems_and_fails_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state machine that lacks a substitution its ASL uses, alone in a template (make lint
    lints the real one; cfn-lint takes seconds over it): both forms of the lint find it."""
    broken = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"TopicRoot": {"Type": "String", "Default": "notifier"}},
        "Resources": {
            "HelloStateMachine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": "arn:aws:iam::123456789012:role/hello",
                    "DefinitionS3Location": "hello.asl.json",
                    "DefinitionSubstitutions": {"TopicRoot": {"Ref": "TopicRoot"}},
                },
            }
        },
    }
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    assert package.main(["--lint", "--template", str(path)]) == 1
    problems = capsys.readouterr().out.splitlines()
    assert {problem.split()[0] for problem in problems} == {"[packaged]", "[ASL]"}, problems
    assert all("HelloFunctionArn" in problem for problem in problems), problems


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "build" / "template.json"
    assert package.main(["--out", str(out), "--bucket", BUCKET]) == 0
    written = json.loads(out.read_text())
    keys = {
        f["Properties"]["Code"]["S3Key"]
        for f in resources_of(written, "AWS::Lambda::Function").values()
    }
    assert all((out.parent / key).is_file() for key in keys)
    with pytest.raises(SystemExit):
        package.main(["--out", str(out)])
