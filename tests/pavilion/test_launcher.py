from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from pavilion.launcher import Launcher, LaunchError, ProcessSpec, is_loopback
from pavilion.launcher_cli import build_plan, try_lines

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway"


def args(**overrides: object) -> argparse.Namespace:
    values = {"config": str(EXAMPLE), "region": None, "xds_port": 18000, "admin_port": 18001,
              "envoy_admin_port": 9901, "no_upstreams": False, **overrides}
    return argparse.Namespace(**values)


def test_plan_starts_upstreams_then_control_plane_then_envoy(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    plan = build_plan(args(), config, str(tmp_path))
    names = [spec.name for spec in plan]
    assert names[-2:] == ["controlplane", "envoy-edge"]
    endpoints = {(e.host, e.port) for s in config.services for e in s.endpoints}
    assert len(names) - 2 == len(endpoints)
    envoy = plan[-1]
    bootstrap = next(iter(envoy.files.values()))
    assert f'region: "{config.regions[0]}"' in bootstrap
    assert "port_value: 18000" in bootstrap
    assert envoy.ready_ports == [item.port for item in config.listeners]
    assert [spec.name for spec in build_plan(args(no_upstreams=True), config, str(tmp_path))] == names[-2:]


def test_try_lines_name_reachable_routes() -> None:
    lines = try_lines(load_config(EXAMPLE))
    assert any("/v1/accounts/example" in line and "# route accounts" in line for line in lines)
    assert not any("payments-debug" in line for line in lines)  # a regex has no obvious URL


def test_a_process_that_dies_before_ready_is_reported_with_its_output(tmp_path: Path) -> None:
    import sys

    launcher = Launcher([ProcessSpec("sayer", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"],
                                     ready_ports=[1])], log_dir=str(tmp_path))
    try:
        with pytest.raises(LaunchError, match=r"sayer exited \(3\)[^$]*boom"):
            launcher.start_all(timeout=10)
    finally:
        launcher.stop_all()


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")
