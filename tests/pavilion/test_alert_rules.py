"""k8s/alerts: the Prometheus rules are valid, their unit tests pass (promtool, from the distribution's
`prometheus` package, which `make test` installs), and every metric they read is one Pavilion exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from ruamel.yaml import YAML

ALERTS = Path(__file__).resolve().parents[2] / "k8s" / "alerts"
RULES = ALERTS / "pavilion.rules.yaml"
# The certificate alerts are tested in a file of their own, evaluated hourly over weeks.
RULE_TESTS = ("pavilion.rules.test.yaml", "pavilion.rules.certificates.test.yaml")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",), "summary": ("",)}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: `make test` installs it (apt-get install prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=ALERTS)


def rules() -> list[dict[str, object]]:
    groups = YAML(typ="safe").load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_series() -> set[str]:
    """The series names Pavilion's three services can export, from the metrics their code registers."""
    import controlplane.app  # noqa: F401  (each app imports every module that registers a metric)
    import extauthz.app  # noqa: F401
    import ratelimit.app  # noqa: F401
    from extauthz.metrics import revocation_subscribed

    revocation_subscribed()  # registered by the first Redis store only (absent with the in-memory store)
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", *RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_metric_an_alert_reads_is_exported() -> None:
    exported = exported_series()
    read = {name for rule in rules() for name in re.findall(r"\bpavilion_[a-z0-9_]+", str(rule["expr"]))}
    assert read and read <= exported, f"not exported by any service: {sorted(read - exported)}"


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    names = [str(rule["alert"]) for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]  # type: ignore[index]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]  # type: ignore[call-overload]


def test_every_certificate_expiry_gauge_has_a_warning_and_a_critical_alert() -> None:
    gauges = {name for name in exported_series() if name.endswith("_expiry_timestamp_seconds")}
    assert gauges == {"pavilion_controlplane_certificate_expiry_timestamp_seconds",
                      "pavilion_grpc_server_certificate_expiry_timestamp_seconds",
                      "pavilion_xds_client_certificate_expiry_timestamp_seconds"}
    for gauge in gauges:
        severities = {rule["labels"]["severity"] for rule in rules() if gauge in str(rule["expr"])}  # type: ignore[index]
        assert severities == {"warning", "critical"}, gauge


def test_each_certificate_alert_says_whether_a_renewal_needs_a_restart() -> None:
    """Serving certificates and the services' xDS client certificates follow their files (an alert means the
    file was not renewed): the text must not send the operator the wrong way."""
    for rule in rules():
        expr, text = str(rule["expr"]), str(rule["annotations"]["description"])  # type: ignore[index]
        if "pavilion_grpc_server_certificate_expiry_timestamp_seconds" in expr:
            assert "not renewed" in text and "rollout restart" not in text, rule["alert"]
            assert "xds_client" not in expr, rule["alert"]
        if "pavilion_xds_client_certificate_expiry_timestamp_seconds" in expr:
            assert "without a restart" in text and "rollout restart" not in text, rule["alert"]


def test_every_alert_has_a_unit_test() -> None:
    tests = [test for name in RULE_TESTS for test in YAML(typ="safe").load((ALERTS / name).read_text())["tests"]]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == {str(rule["alert"]) for rule in rules()}
