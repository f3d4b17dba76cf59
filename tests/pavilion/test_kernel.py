from __future__ import annotations

import io
import json

import pytest

from pavilion.durations import format_duration, parse_duration
from pavilion.errors import ConfigError, ConfigErrors, Location
from pavilion.log import configure_logging, get_logger, redact_url
from pavilion.settings import Settings


def test_log_lines_never_carry_tokens_credentials_or_emails() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    get_logger("t").info("request", token=token, authorization=f"Bearer {token}",
                         note=f"user alice@example.com sent {token}", headers={"cookie": "sid=1", "x-ok": "fine"})
    line = stream.getvalue()
    assert "eyJhbGci" not in line and "alice@example.com" not in line and "sid=1" not in line
    event = json.loads(line)
    assert event["headers"]["x-ok"] == "fine"
    assert event["token"] == "[redacted]"


def test_durations_round_trip_and_reject_nonsense() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("24h") == 86400
    assert format_duration(0.025) == "25ms"
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("10 parsecs")


def test_settings_read_env_then_overrides() -> None:
    settings = Settings.from_env({"PAVILION_METRICS_PORT": "9100", "PAVILION_LOG_LEVEL": "debug"}, log_level="warning")
    assert settings.metrics_port == 9100 and settings.log_level == "warning"
    with pytest.raises(ValueError, match="PAVILION_METRICS_PORT"):
        Settings.from_env({"PAVILION_METRICS_PORT": "many"})


def test_config_errors_print_file_line_column_path_message() -> None:
    error = ConfigError("unknown field", location=Location("routes/a.yaml", 3, 5), path="routes[0].matchh")
    assert str(error) == "routes/a.yaml:3:5: routes[0].matchh: unknown field"
    assert str(ConfigErrors([error, error])).count("\n") == 1


def test_logging_follows_a_replaced_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("info", "json")
    first.close()  # as a test runner's capture is closed after the test that configured logging
    monkeypatch.setattr("sys.stderr", second)
    get_logger("t").info("after_capture_closed")
    assert "after_capture_closed" in second.getvalue()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2@redis.internal:6380/2", "redis://:***@redis.internal:6380/2"),
    ("rediss://app:hunter2@r:6379?ssl_ca_certs=/ca.pem", "rediss://app:***@r:6379?ssl_ca_certs=/ca.pem"),
    ("redis+sentinel://:hunter2@s1,s2/m?sentinel_password=hun@ter2", "redis+sentinel://:***@s1,s2/m?sentinel_password=***"),
    ("app@r:6379", "app@r:6379"),
    ("r1:7000,r2:7001", "r1:7000,r2:7001"),
])
def test_redact_url_stars_passwords_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown
