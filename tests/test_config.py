from pathlib import Path

import pytest

from notifier.config import ConfigError
from notifier.config_loader import config_path, load_settings
from notifier.local.settings import LOCAL_CONFIG, LOCAL_WORK_ROOT

REPO = Path(__file__).resolve().parent.parent
ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:notifier-dev-Hello"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notifier.toml"
    path.write_text(text)
    return path


ISSUER = "https://abc123.execute-api.us-east-1.amazonaws.com/dev"
WITHOUT_API_KEYS = f"""
[iotauth]
issuer_url = "{ISSUER}"
[s3]
bucket = "b"
[routes.hello]
state_machine = "{ARN}"
input = "body"
"""
MINIMAL = WITHOUT_API_KEYS + f'[api_keys.minimal]\nsha256 = "{"0" * 64}"\n'


def test_shipped_configs_load() -> None:
    local = load_settings(LOCAL_CONFIG, {})
    assert set(local.routes) == {"p1", "hello", "hello-express", "qc", "archive"}
    assert local.routes["p1"].input == "sidecar"
    assert local.routes["p1"].default_input == {"foo": "foo val", "bar": "bar val"}
    assert local.routes["hello-express"].workflow == "express"
    # The local stack is reached as IoT Core is: TLS, custom authentication, SigV4.
    assert local.mqtt.transport == "custom-auth" and local.iotauth.issuer_url
    # Relative to the file: where `notifier local` keeps the default stack's CA.
    assert local.mqtt.ca_file is not None
    assert Path(local.mqtt.ca_file).resolve() == LOCAL_WORK_ROOT / "notifier-local" / "ca.pem"
    assert (local.aws.access_key_id, local.aws.secret_access_key) == ("local", "local")
    example = load_settings(REPO / "config" / "notifier.toml", {"NOTIFIER_S3_BUCKET": "b"})
    assert example.aws.endpoint_url is None
    assert example.mqtt.transport == "custom-auth" and example.mqtt.ca_file is None


def test_file_names_are_relative_to_the_file_and_overrides_to_the_working_directory(
    tmp_path: Path,
) -> None:
    mqtt = '[mqtt]\nca_file = "certs/ca.pem"\ncert_file = "/abs.pem"\n'
    config = write(tmp_path, MINIMAL + mqtt)
    settings = load_settings(config, {"NOTIFIER_MQTT_KEY_FILE": "key.pem"})
    assert settings.mqtt.ca_file == str(tmp_path / "certs" / "ca.pem")
    assert settings.mqtt.cert_file == "/abs.pem"
    assert settings.mqtt.key_file == "key.pem"


def test_env_overrides_every_kind_of_key(tmp_path: Path) -> None:
    env = {
        "NOTIFIER_HTTP_PORT": "0",
        "NOTIFIER_HTTP_DEFAULT_WAIT": "2.5",
        "NOTIFIER_MQTT_ENDPOINT": "localhost",
        "NOTIFIER_MQTT_TRANSPORT": "tcp",
        "NOTIFIER_AWS_REGION": "eu-west-1",
        "NOTIFIER_DAEMON_INSTANCE_ID": "i-1",
        "NOTIFIER_ROUTES_HELLO_INPUT": "sidecar",
    }
    s = load_settings(write(tmp_path, MINIMAL), env)
    assert s.http.port == 0
    assert s.http.default_wait == 2.5
    assert s.mqtt.endpoint == "localhost"
    assert s.aws.region == "eu-west-1"
    assert s.daemon.instance_id == "i-1"
    assert s.routes["hello"].input == "sidecar"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[s3", {}, "not valid TOML"),
        (MINIMAL + "[bogus]\n", {}, "unknown section [bogus]"),
        (MINIMAL + "[http]\nprot = 1\n", {}, "[http] unknown key 'prot'"),
        (MINIMAL, {"NOTIFIER_HTTP_PORT": "abc"}, "NOTIFIER_HTTP_PORT: expected an integer"),
        (MINIMAL + "[http]\nport = 70000\n", {}, "not a TCP port"),
        (MINIMAL, {"NOTIFIER_MQTT_TRANSPORT": "udp"}, "expected one of custom-auth, "),
        (MINIMAL.replace(ISSUER, ""), {}, "[iotauth] issuer_url: required with transport"),
        (MINIMAL, {"NOTIFIER_MQTT_TRANSPORT": "websockets"}, "tokens are not used"),
        (MINIMAL, {"NOTIFIER_IOTAUTH_ISSUER_URL": "ftp://x"}, "expected an http(s):// URL"),
        (MINIMAL, {"NOTIFIER_IOTAUTH_REFRESH_MARGIN": "0"}, "refresh_margin: must be positive"),
        (MINIMAL.replace('bucket = "b"', ""), {}, "[s3] bucket: required"),
        (MINIMAL.split("[routes")[0] + MINIMAL.split('"body"')[1], {}, "no routes"),
        (MINIMAL.replace(ARN, "nope"), {}, "expected a state machine ARN"),
        (MINIMAL, {"NOTIFIER_DAEMON_INSTANCE_ID": "a/b"}, "[daemon] instance_id"),
        (MINIMAL, {"NOTIFIER_DAEMON_SFN_READ_RATE": "0"}, "sfn_read_rate: must be positive"),
        (MINIMAL, {"NOTIFIER_DAEMON_SFN_START_RATE": "-1"}, "sfn_start_rate: must be positive"),
        (
            MINIMAL.replace("[routes", "[daemon]\nreconcile_rate = 20\n[routes", 1),
            {},
            "[daemon] reconcile_rate: replaced by sfn_read_rate",
        ),
        (MINIMAL, {"NOTIFIER_MQTT_PEAK_COMPLETIONS_PER_SECOND": "0"}, "must be positive"),
        (MINIMAL, {"NOTIFIER_MQTT_CONNECTION_SHARE": "1.5"}, "[mqtt] connection_share"),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    assert message in refusal(tmp_path, text, env)


def refusal(tmp_path: Path, text: str, env: dict[str, str]) -> str:
    """The one line the configuration ``text`` with ``env`` is refused with."""
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), env)
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", {})


def test_api_keys_are_named_tables_with_env_overrides(tmp_path: Path) -> None:
    digest = "ab" * 32
    text = MINIMAL + f'[api_keys.ci]\nsha256 = "{digest}"\nrate = 2\n'
    settings = load_settings(write(tmp_path, text), {"NOTIFIER_API_KEYS_CI_BURST": "3"})
    assert settings.http.require_api_key
    key = settings.api_keys["ci"]
    assert (key.sha256, key.rate, key.burst) == (digest, 2.0, 3)


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path) -> None:
    text = MINIMAL.replace('bucket = "b"', 'bucket = ""') + (
        '[http]\nport = 70000\n[api_keys.ci]\nsha256 = "not-a-digest"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), {})
    lines = str(raised.value).splitlines()
    assert len(lines) == 3
    assert any("[http] port" in line for line in lines)
    assert any("[s3] bucket" in line for line in lines)
    assert any("[api_keys.ci] sha256" in line for line in lines)
    assert all(line.startswith(str(tmp_path)) for line in lines)


def test_required_api_key_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="require_api_key"):
        load_settings(write(tmp_path, WITHOUT_API_KEYS), {})
    settings = load_settings(
        write(tmp_path, WITHOUT_API_KEYS), {"NOTIFIER_HTTP_REQUIRE_API_KEY": "false"}
    )
    assert not settings.api_keys


def test_poll_mode_needs_no_mqtt_or_token_issuer(tmp_path: Path) -> None:
    without_issuer = MINIMAL.replace(f'[iotauth]\nissuer_url = "{ISSUER}"\n', "")
    with pytest.raises(ConfigError, match=r"\[iotauth\] issuer_url: required"):
        load_settings(write(tmp_path, without_issuer), {})
    settings = load_settings(
        write(tmp_path, without_issuer), {"NOTIFIER_DAEMON_COMPLETION": "poll"}
    )
    assert settings.daemon.completion == "poll"
    assert settings.daemon.poll_interval == 1.5


def test_the_completion_queue_needs_its_dead_letter_queue(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[sqs]\nqueue_prefix = "notifier-dev-completions-"\n')
    with pytest.raises(ConfigError, match=r"\[sqs\] dead_letter_queue_arn: required"):
        load_settings(path, {})
    long_id = {"NOTIFIER_DAEMON_INSTANCE_ID": "i" * 64}
    dlq = {"NOTIFIER_SQS_DEAD_LETTER_QUEUE_ARN": "arn:aws:sqs:us-east-1:123456789012:dlq"}
    assert load_settings(path, dlq).sqs.queue_prefix == "notifier-dev-completions-"
    with pytest.raises(ConfigError, match="longer than a queue name"):
        load_settings(path, {**dlq, **long_id})


def test_route_settings_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"

    def config(route_keys: str) -> str:
        """MINIMAL with ``route_keys`` in its [routes.hello]."""
        return WITHOUT_API_KEYS + route_keys + MINIMAL[len(WITHOUT_API_KEYS) :]

    path.write_text(
        config(
            'workflow = "express"\ndefault_input = { a = 1 }\nmax_wait = 10\n'
            'start_roles = ["operator"]\n'
        ),
        encoding="utf-8",
    )
    route = load_settings(path, {}).routes["hello"]
    assert (route.workflow, route.default_input, route.max_wait) == ("express", {"a": 1}, 10.0)
    assert route.start_roles == ("operator",)
    env = {
        "NOTIFIER_ROUTES_HELLO_DEFAULT_INPUT": '{"b": 2}',
        "NOTIFIER_ROUTES_HELLO_START_ROLES": "admin, operator",
    }
    route = load_settings(path, env).routes["hello"]
    assert (route.default_input, route.start_roles) == ({"b": 2}, ("admin", "operator"))
    for bad, message in [
        ("default_wait = 20", "default_wait: must not exceed max_wait"),
        ("start_roles = []", "start_roles: name at least one role"),
    ]:
        path.write_text(config(f"max_wait = 10\n{bad}\n"), encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_settings(path, {})


def test_the_configuration_file_is_the_given_one_else_the_environments_else_the_default(
    tmp_path: Path,
) -> None:
    default = tmp_path / "notifier.toml"
    given, named = tmp_path / "given.toml", tmp_path / "named.toml"
    env = {"NOTIFIER_CONFIG": str(named)}
    assert config_path(None, {}, default) is None  # no file: the environment alone
    default.write_text("")
    assert config_path(None, {}, default) == default
    assert config_path(None, env, default) == named
    assert config_path(given, env, default) == given


def test_tracing_needs_the_otel_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL + "[tracing]\nenabled = true\n")
    assert load_settings(path, {}).tracing.enabled
    monkeypatch.setattr("notifier.config_checks.otel_missing", lambda: True)
    with pytest.raises(ConfigError, match=r"\[tracing\] enabled: .*notifier\[otel\]"):
        load_settings(path, {})


def test_a_key_s_roles_are_the_daemon_s_own_or_those_a_route_asks_for(tmp_path: Path) -> None:
    def with_key_roles(roles: str, start_roles: str = "") -> str:
        route = f"start_roles = [{start_roles}]\n" if start_roles else ""
        return (
            WITHOUT_API_KEYS.replace("[routes.hello]\n", f"[routes.hello]\n{route}")
            + f'[api_keys.ops]\nsha256 = "{"1" * 64}"\nroles = [{roles}]\nmax_held = 5\n'
        )

    settings = load_settings(write(tmp_path, with_key_roles('"approver", "admin"')), {})
    assert settings.api_keys["ops"].roles == ("approver", "admin")
    assert settings.api_keys["ops"].max_held == 5
    named = with_key_roles('"operator"', '"operator"')
    assert load_settings(write(tmp_path, named), {}).api_keys["ops"].roles == ("operator",)
    message = refusal(tmp_path, with_key_roles('"admn"'), {})
    assert "[api_keys.ops] roles: admn unknown" in message
    refused = with_key_roles('"admin"').replace("max_held = 5", "max_held = 0")
    assert "[api_keys.ops] max_held: must be at least 1" in refusal(tmp_path, refused, {})
