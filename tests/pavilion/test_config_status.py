"""ConfigStatus: the version in use on /status and as pavilion_config_info, the last refused update."""

from __future__ import annotations

from prometheus_client import REGISTRY

from pavilion.config_status import ConfigStatus


def info(version: str) -> float | None:
    return REGISTRY.get_sample_value("pavilion_config_info", {"version": version})


def test_the_metric_follows_the_version_and_errors_clear_on_the_next_apply() -> None:
    status = ConfigStatus("xds", details=lambda: {"xds": {"connected": True}})
    assert status.render()["ready"] is False and status.render()["config_version"] is None
    status.applied("test-v1")
    assert info("test-v1") == 1.0
    status.refused("xds:TenantPolicy/x: refused")
    rendered = status.render()
    assert rendered["config_version"] == "test-v1" and rendered["last_error"] == "xds:TenantPolicy/x: refused"
    assert rendered["source"] == "xds" and rendered["xds"] == {"connected": True}
    status.applied("test-v2")
    assert info("test-v2") == 1.0 and info("test-v1") is None
    assert status.render()["last_error"] is None


def refused() -> float | None:
    return REGISTRY.get_sample_value("pavilion_config_refused")


def test_config_refused_is_1_while_the_last_update_was_refused_and_0_once_one_is_applied() -> None:
    status = ConfigStatus("file")
    assert refused() == 0.0
    status.applied("test-refused-v1")
    assert refused() == 0.0
    status.refused("tenants.yaml:3:5: tenants[0].issuer: required")
    assert refused() == 1.0
    status.refused("tenants.yaml:3:5: still broken")
    assert refused() == 1.0
    status.applied("test-refused-v2")
    assert refused() == 0.0
