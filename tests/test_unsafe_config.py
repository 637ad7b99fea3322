"""Configurations that would expose the daemon are refused at start, each with a one-line
reason: keys off beyond loopback, plaintext token issuer or MQTT beyond loopback, secrets in
the configuration file. The same settings on loopback (the local stack) are accepted."""

from __future__ import annotations

import os
import subprocess  # nosec B404  # runs this project's own command line
import sys
from pathlib import Path

import pytest

from notifier.cli import EX_CONFIG
from notifier.config_loader import load_settings
from tests.test_config import ISSUER, MINIMAL, WITHOUT_API_KEYS, refusal, write

KEYS_OFF = {"NOTIFIER_HTTP_REQUIRE_API_KEY": "false"}


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (WITHOUT_API_KEYS, {**KEYS_OFF, "NOTIFIER_HTTP_HOST": "0.0.0.0"},  # nosec B104
         "require_api_key: false is for a loopback host only"),
        (WITHOUT_API_KEYS, {**KEYS_OFF, "NOTIFIER_HTTP_HOST": "192.0.2.7"},
         "require_api_key: false is for a loopback host only"),
        (MINIMAL.replace(ISSUER, "http://issuer.example/dev"), {},
         "issuer_url: plain http:// is for a loopback issuer only"),
        (MINIMAL, {"NOTIFIER_MQTT_TRANSPORT": "tcp", "NOTIFIER_MQTT_ENDPOINT": "broker.example"},
         "'tcp' (plain MQTT) is for a loopback broker only"),
        (MINIMAL + '[aws]\nsecret_access_key = "wJalrXUtnFEMI"\n', {},
         "[aws] secret_access_key: a secret does not belong in the configuration file"),
        (MINIMAL + '[aws]\nendpoint_url = "https://sts.example"\nsecret_access_key = "x"\n', {},
         "set AWS_SECRET_ACCESS_KEY in the environment file or use a LoadCredential="),
    ],
    ids=["keys-off-any", "keys-off-address", "plain-issuer", "plain-mqtt", "secret", "secret-2"],
)  # fmt: skip
def test_an_unsafe_configuration_is_refused(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    assert message in refusal(tmp_path, text, env)


@pytest.mark.parametrize(
    ("text", "env"),
    [
        (WITHOUT_API_KEYS, {**KEYS_OFF, "NOTIFIER_HTTP_HOST": "::1"}),
        (MINIMAL.replace(ISSUER, "http://127.0.0.1:4567"), {}),
        (MINIMAL, {"NOTIFIER_MQTT_TRANSPORT": "tcp", "NOTIFIER_MQTT_ENDPOINT": "localhost"}),
        (MINIMAL + '[aws]\nendpoint_url = "http://127.0.0.1:4566"\nsecret_access_key = "local"\n',
         {}),
        (MINIMAL, {"NOTIFIER_AWS_SECRET_ACCESS_KEY": "from-the-environment-file"}),
    ],
    ids=["keys-off-loopback", "plain-issuer-loopback", "plain-mqtt-loopback", "local-stack",
         "secret-from-env"],
)  # fmt: skip
def test_the_same_on_loopback_or_from_the_environment_is_accepted(
    tmp_path: Path, text: str, env: dict[str, str]
) -> None:
    load_settings(write(tmp_path, text), env)


def test_serve_exits_with_the_reason_on_one_line(tmp_path: Path) -> None:
    """What an operator sees: the command stops before listening, with one line."""
    path = write(tmp_path, WITHOUT_API_KEYS)
    env = {**os.environ, **KEYS_OFF, "NOTIFIER_HTTP_HOST": "0.0.0.0", "NOTIFIER_HTTP_PORT": "0"}  # nosec B104
    done = subprocess.run(  # nosec B603  # this interpreter, fixed arguments
        [sys.executable, "-c", "from notifier.cli import main; main()", "serve", "--config",
         str(path)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == EX_CONFIG  # so systemd does not restart it
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "require_api_key: false is for a loopback host only" in lines[0]
