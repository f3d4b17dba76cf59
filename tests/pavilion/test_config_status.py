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
