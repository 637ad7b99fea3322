"""Turn the source template (statemachines/template.yaml) into a deployable one.

In the source template, as `aws cloudformation package` accepts it:

- a state machine names its ASL file, relative to the template, in
  ``DefinitionS3Location: processa.asl.json`` and lists the values the ASL
  refers to as ``${Name}`` in ``DefinitionSubstitutions``;
- a Lambda function names its code directory in ``Code: functions/processa``; a
  directory that is a Python package (``Code: ../iotauth``) is zipped under its own
  name, so its handlers are named ``iotauth.issuer.handler``. A ``requirements.txt``
  in the code directory names distributions the zip must carry too (one name a line);
  they are copied from the installed ones, and must be pure Python.

Packaging replaces the state machine's two keys with a ``DefinitionString``
that is ``Fn::Sub`` of the ASL text, each ``${Name}`` rewritten to the
reference it stands for (``${StepAFunction.Arn}``, ``${TopicRoot}``). moto's
CloudFormation ignores ``Definition`` + ``DefinitionSubstitutions``, and
mangles ``$$`` in the list form of ``Fn::Sub``; this form works there and in
AWS. Each code directory is zipped deterministically: ``Code`` becomes
``{S3Bucket, S3Key}`` where the key holds the zip's SHA-256, and the zips are
returned for the caller to upload.

    python -m notifier.ops.package --lint [--checkov .venv-checkov/bin/checkov]
    python -m notifier.ops.package --out build/template.json --bucket my-artifacts

Linting runs cfn-lint and, given its executable, checkov over the packaged template (what
deploys). A checkov finding the template accepts is skipped in the resource's own
``Metadata: checkov: skip`` with a ``comment`` giving the reason; a skip without one is a
finding too, and so is a skip of a check the resource no longer fails.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import io
import json
import re
import subprocess  # nosec B404  # runs only the checkov executable given on the command line
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_NAME = "template.yaml"
ARTIFACT_PREFIX = "notifier/lambda"
PLACEHOLDER_BUCKET = "notifier-artifacts-placeholder"
LINT_REGIONS = ["us-east-1"]

# Every zip entry gets this time and mode, so the same files give the same bytes.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o644 << 16
SKIPPED_DIRECTORIES = {"__pycache__"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}
REQUIREMENTS = "requirements.txt"
COMPILED_SUFFIXES = {".so", ".pyd", ".dylib"}
# What of an installed distribution's metadata a zip carries: its description and licence.
VENDORED_METADATA = re.compile(r"[^/]+\.dist-info/(METADATA|licenses/.+|LICEN[CS]E.*)")


# ---------------------------------------------------------------- loading


class CloudFormationLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation short tags into their long form.

    ``!Ref X`` -> ``{"Ref": "X"}``, ``!Condition X`` -> ``{"Condition": "X"}``,
    ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}`` and any other ``!Name v``
    -> ``{"Fn::Name": v}``. Dates stay strings, as CloudFormation reads them.
    """


def _construct_short_tag(loader: CloudFormationLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]  # a mapping node
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


def _construct_timestamp_as_string(loader: CloudFormationLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]  # timestamps are scalars


CloudFormationLoader.add_multi_constructor("!", _construct_short_tag)
CloudFormationLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_string)


def source_dir() -> Path:
    """The directory of the source template, its ASL files and its Lambda code."""
    return Path(str(files("statemachines")))


def load_template(path: Path | None = None) -> dict[str, Any]:
    """Read a CloudFormation template (YAML or JSON); by default the project's source template."""
    text = (path or source_dir() / TEMPLATE_NAME).read_text(encoding="utf-8")
    template = yaml.load(text, Loader=CloudFormationLoader)  # nosec B506  # a SafeLoader
    if not isinstance(template, dict):
        raise ValueError(f"{path or TEMPLATE_NAME}: not a CloudFormation template")
    return template


# ---------------------------------------------------------------- packaging


def package_template(
    template: dict[str, Any], base_dir: Path, bucket: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Return the deployable template and the ``{s3_key: zip_bytes}`` to upload to ``bucket``.

    ``template`` is not changed. Resources already packaged are left as they are.
    """
    packaged = copy.deepcopy(template)
    artifacts: dict[str, bytes] = {}
    for name, resource in packaged.get("Resources", {}).items():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::StepFunctions::StateMachine":
            location = properties.get("DefinitionS3Location")
            if isinstance(location, str):
                inline_definition(properties, base_dir / location, name)
        elif resource.get("Type") == "AWS::Lambda::Function":
            code = properties.get("Code")
            if isinstance(code, str):
                key, data = zip_code(base_dir / code)
                artifacts[key] = data
                properties["Code"] = {"S3Bucket": bucket, "S3Key": key}
    return packaged, artifacts


def inline_definition(properties: dict[str, Any], asl_path: Path, resource_name: str) -> None:
    """Replace DefinitionS3Location + DefinitionSubstitutions by DefinitionString."""
    text = asl_path.read_text(encoding="utf-8")
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{resource_name}: {asl_path} is not valid JSON: {error}") from error
    substitutions = properties.pop("DefinitionSubstitutions", {})
    del properties["DefinitionS3Location"]
    properties["DefinitionString"] = definition_string(text, substitutions)


def definition_string(text: str, substitutions: dict[str, Any]) -> dict[str, Any]:
    """``Fn::Sub`` the ASL text with its substitutions.

    Substitutions that are a plain string, a ``Ref`` or a ``Fn::GetAtt`` are
    written into the text as ``${Resource}`` / ``${Resource.Attribute}``, and
    the single-string form of ``Fn::Sub`` is used. The list form is kept only
    for other values: moto's CloudFormation evaluates it with Python's
    ``string.Template``, which turns the ASL's ``$$.`` (context object) into ``$.``.
    """
    references = {name: _sub_reference(value) for name, value in substitutions.items()}
    if any(reference is None for reference in references.values()):
        return {"Fn::Sub": [text, substitutions]}

    def replace(match: re.Match[str]) -> str:
        reference = references.get(match.group(1))
        return match.group(0) if reference is None else reference

    return {"Fn::Sub": re.sub(r"\$\{([A-Za-z0-9_]+)\}", replace, text)}


def _sub_reference(value: Any) -> str | None:
    """How ``value`` is written inside a single-string ``Fn::Sub``, or None if it cannot be."""
    if isinstance(value, str):
        return value.replace("${", "${!")
    if isinstance(value, dict) and len(value) == 1:
        reference = value.get("Ref")
        if isinstance(reference, str):
            return "${" + reference + "}"
        attribute = value.get("Fn::GetAtt")
        if isinstance(attribute, list) and len(attribute) == 2:
            return "${" + ".".join(attribute) + "}"
        if isinstance(attribute, str):
            return "${" + attribute + "}"
    return None


def zip_code(directory: Path) -> tuple[str, bytes]:
    """Zip a Lambda code directory the same way every time; return (S3 key, zip bytes).

    The distributions its ``requirements.txt`` names are added from the installed ones.
    """
    directory = directory.resolve()
    root = directory.parent if (directory / "__init__.py").is_file() else directory
    paths = sorted(
        (path for path in directory.rglob("*") if path.is_file() and not _skipped(path, directory)),
        key=lambda path: path.relative_to(root).as_posix(),
    )
    if not paths:
        raise ValueError(f"Lambda code directory {directory} has no files")
    entries = {path.relative_to(root).as_posix(): path for path in paths}
    requirements = directory / REQUIREMENTS
    if requirements.is_file():
        for name in _requirement_names(requirements):
            for entry, path in vendored_files(name):
                if entries.setdefault(entry, path) != path:
                    raise ValueError(f"{requirements}: {name}'s {entry} is already in the zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in sorted(entries.items()):
            info = zipfile.ZipInfo(name, ZIP_DATE_TIME)
            info.external_attr = ZIP_FILE_MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    return f"{ARTIFACT_PREFIX}/{directory.name}-{digest}.zip", data


def vendored_files(distribution: str) -> Iterator[tuple[str, Path]]:
    """(zip entry, file) of an installed pure-Python distribution: its modules, and the
    metadata and licence of its ``.dist-info``."""
    try:
        installed = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"{distribution} is to be vendored but is not installed") from None
    for file in installed.files or ():
        entry = file.as_posix()
        top = file.parts[0]
        if top.endswith(".dist-info"):
            if not VENDORED_METADATA.fullmatch(entry):
                continue
        elif top.endswith(".data") or top == ".." or file.suffix in SKIPPED_SUFFIXES:
            continue
        elif SKIPPED_DIRECTORIES.intersection(file.parts):
            continue
        if file.suffix in COMPILED_SUFFIXES:
            raise ValueError(f"{distribution} is not pure Python ({entry}); it cannot be vendored")
        yield entry, Path(str(installed.locate_file(file)))


def _requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            message = "give a distribution name only (the installed version is vendored)"
            raise ValueError(f"{path}: {name!r}: {message}")
        names.append(name)
    return names


def _skipped(path: Path, directory: Path) -> bool:
    parts = path.relative_to(directory).parts
    if parts == (REQUIREMENTS,):
        return True  # what to vendor, not code
    return path.suffix in SKIPPED_SUFFIXES or any(part in SKIPPED_DIRECTORIES for part in parts)


# ---------------------------------------------------------------- linting


def lint(template: dict[str, Any]) -> list[str]:
    """Run cfn-lint on the packaged template; return its findings (empty when clean).

    The template is linted twice: as deployed (DefinitionString), and with
    each state machine's ASL as a ``Definition`` object beside its
    ``DefinitionSubstitutions``, the form in which cfn-lint also checks the
    ASL itself against its schema.
    """
    base_dir = source_dir()
    packaged, _ = package_template(template, base_dir, PLACEHOLDER_BUCKET)
    with_objects, _ = package_template(
        _with_definition_objects(template, base_dir), base_dir, PLACEHOLDER_BUCKET
    )
    return _cfn_lint(packaged, "packaged") + _cfn_lint(with_objects, "ASL")


def checkov_findings(template: dict[str, Any], checkov: str) -> list[str]:
    """Run the checkov executable over the packaged template; return its failed checks that
    no skip accepts, the skips of checks that no longer fail, and the skips that give no
    reason (empty when clean).

    checkov is given the template without its skips, and they are matched here against what
    it finds: checkov itself would not tell a skip still needed from one that is not.
    """
    problems = unexplained_skips(template)
    packaged, _ = package_template(template, source_dir(), PLACEHOLDER_BUCKET)
    accepted = _take_out_skips(packaged)
    with tempfile.TemporaryDirectory(prefix="notifier-checkov-") as directory:
        path = Path(directory) / "template.json"
        path.write_text(json.dumps(packaged, indent=1), encoding="utf-8")
        # --skip-download: no fetching of guidelines (and no network) during a lint.
        command = [checkov, "--file", str(path), "--framework", "cloudformation", "--quiet",
                   "--skip-download", "--output", "json"]  # fmt: skip
        finished = subprocess.run(  # nosec B603  # a fixed argument list, no shell
            command, capture_output=True, text=True, check=False
        )
    try:
        report = json.loads(finished.stdout)
    except json.JSONDecodeError:
        return [*problems, f"[checkov] did not run (exit {finished.returncode}): "
                f"{finished.stderr.strip()[-500:]}"]  # fmt: skip
    if report["summary"]["parsing_errors"]:
        problems.append("[checkov] could not parse the packaged template")
    failed = set()
    for check in report["results"].get("failed_checks", []):
        resource_name = check["resource"].split(".", 1)[-1]  # AWS::SNS::Topic.StatusTopic
        failed.add((resource_name, check["check_id"]))
        if (resource_name, check["check_id"]) not in accepted:
            problems.append(
                f"[checkov] {check['check_id']} {check['resource']}: {check['check_name']}"
            )
    for resource_name, check_id in sorted(accepted - failed):
        problems.append(f"[checkov] {resource_name} skips {check_id}, which it does not fail")
    return problems


def _take_out_skips(template: dict[str, Any]) -> set[tuple[str, str]]:
    """Remove the checkov skips from the resources' metadata; return them as
    ``(resource name, check id)``."""
    skipped = set()
    for name, resource in template.get("Resources", {}).items():
        metadata = resource.get("Metadata", {})
        for skip in metadata.get("checkov", {}).pop("skip", []):
            skipped.add((name, str(skip.get("id"))))
        if metadata.get("checkov") == {}:
            del metadata["checkov"]
    return skipped


def unexplained_skips(template: dict[str, Any]) -> list[str]:
    """The checkov skips in resources' metadata that give no one-line reason."""
    problems = []
    for name, resource in template.get("Resources", {}).items():
        skips = resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
        for skip in skips:
            comment = skip.get("comment")
            if not isinstance(comment, str) or not comment.strip() or "\n" in comment.strip():
                problems.append(
                    f"[checkov] {name} skips {skip.get('id')} without a one-line reason"
                )
    return problems


def _cfn_lint(template: dict[str, Any], label: str) -> list[str]:
    from cfnlint.api import lint as cfn_lint  # imported here: only linting needs cfn-lint

    matches = cfn_lint(json.dumps(template, indent=1), regions=LINT_REGIONS)
    return [
        f"[{label}] {match.rule.id} {match.message} (line {match.linenumber})" for match in matches
    ]


def _with_definition_objects(template: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    variant = copy.deepcopy(template)
    for resource in variant.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        location = properties.get("DefinitionS3Location")
        if resource.get("Type") == "AWS::StepFunctions::StateMachine" and isinstance(location, str):
            del properties["DefinitionS3Location"]
            properties["Definition"] = json.loads((base_dir / location).read_text(encoding="utf-8"))
    return variant


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m notifier.ops.package",
        description="Package (and lint) the notifier CloudFormation template.",
    )
    parser.add_argument(
        "--template", type=Path, help="source template (default: the statemachines package's)"
    )
    parser.add_argument("--lint", action="store_true", help="run cfn-lint; exit 1 on findings")
    parser.add_argument(
        "--checkov", metavar="EXECUTABLE", help="with --lint, also run this checkov executable"
    )
    parser.add_argument("--out", type=Path, help="write the packaged template (JSON) here")
    parser.add_argument("--bucket", help="artifacts bucket the Lambda zips will be uploaded to")
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        help="write the zips here, under their S3 keys (default: the directory of --out)",
    )
    args = parser.parse_args(argv)
    if not args.lint and args.out is None:
        parser.error("nothing to do: give --lint and/or --out")
    if args.checkov and not args.lint:
        parser.error("--checkov needs --lint")
    if args.out is not None and not args.bucket:
        parser.error("--out needs --bucket")

    template = load_template(args.template)
    status = 0
    if args.lint:
        problems = lint(template)
        if args.checkov:
            problems += checkov_findings(template, args.checkov)
        for problem in problems:
            print(problem)
        status = 1 if problems else 0
    if args.out is not None:
        base_dir = args.template.parent if args.template else source_dir()
        packaged, artifacts = package_template(template, base_dir, args.bucket)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(packaged, indent=2) + "\n", encoding="utf-8")
        artifacts_dir = args.artifacts_dir or args.out.parent
        for key, data in artifacts.items():
            target = artifacts_dir / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        print(f"wrote {args.out} and {len(artifacts)} artifact(s) under {artifacts_dir}")
    return status


if __name__ == "__main__":
    sys.exit(main())
