from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from controlplane.config.load import load_config
from pavilion import launch_plan
from pavilion.launch_plan import stores
from pavilion.launcher import Launcher, LaunchError, ProcessSpec, is_loopback
from pavilion.launcher_cli import build_plan, demo_lines, try_lines
from tests.controlplane.certs import make_ca, write_pair

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway"


def args(**overrides: object) -> argparse.Namespace:
    values = {"config": str(EXAMPLE), "region": None, "xds_port": 18000, "admin_port": 18001,
              "envoy_admin_port": 9901, "no_upstreams": False, "redis_port": 16379, "no_redis": False,
              "state_dir": str(overrides.pop("state_dir", ".run")), **overrides}
    return argparse.Namespace(**values)


def test_plan_starts_redis_upstreams_control_plane_services_then_envoy(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    plan = build_plan(args(state_dir=tmp_path), config, str(tmp_path))
    names = [spec.name for spec in plan]
    tail = ["controlplane", "extauthz", "ratelimit", "envoy-edge"]
    assert names[-4:] == tail
    assert (names[0] == "redis") == (shutil.which("redis-server") is not None)
    own = {"extauthz", "ratelimit"}
    endpoints = {(e.host, e.port) for s in config.services if s.name not in own for e in s.endpoints}
    assert len([n for n in names if n.startswith("echo-")]) == len(endpoints)
    envoy = plan[-1]
    bootstrap = next(iter(envoy.files.values()))
    assert f'region: "{config.regions[0]}"' in bootstrap
    assert "port_value: 18000" in bootstrap
    assert envoy.ready_ports == [item.port for item in config.listeners]
    extauthz = plan[names.index("extauthz")]
    argv = list(extauthz.argv)
    assert argv[argv.index("--port") + 1] == "9191" and argv[argv.index("--admin-port") + 1] == "9192"
    assert "--xds" in extauthz.argv and "127.0.0.1:18000" in extauthz.argv
    plain = build_plan(args(no_upstreams=True, no_redis=True), config, str(tmp_path))
    assert [spec.name for spec in plain] == tail
    assert not any("--redis" in spec.argv for spec in plain)


def test_demo_lines_show_401_200_429_and_a_routes_scope(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    lines = demo_lines(config, "examples/gateway", "demo", "redis://127.0.0.1:16379/0")
    assert "token --tenant demo --config examples/gateway" in lines[0]
    assert "401" in lines[1] and "/v1/accounts/example" in lines[1] and "Bearer" not in lines[1]
    assert "200" in lines[2] and "Bearer $TOKEN" in lines[2]
    burst = next(line for line in lines if "429" in line)
    assert "seq 6" in burst and "/v1/payments/example" in burst  # payments allows 5 a minute
    assert any("revoke --redis redis://127.0.0.1:16379/0 --tenant demo" in line for line in lines)
    scoped = [line for line in lines if "/v1/accounts/admin/example" in line]
    assert "$TOKEN" in scoped[0] and "403 insufficient_scope" in scoped[0] and "accounts:admin" in scoped[0]
    assert "$SCOPED" in scoped[1] and "# 200" in scoped[1]
    assert any(line.strip().startswith("SCOPED=$(") and """'{"scope": "accounts:admin"}'""" in line
               for line in lines)
    assert not any("revoke" in line for line in demo_lines(config, "examples/gateway", "demo", None))


def test_try_lines_name_reachable_routes() -> None:
    lines = try_lines(load_config(EXAMPLE))
    assert any("/v1/accounts/example" in line and "# route accounts" in line for line in lines)
    assert not any("payments-debug" in line for line in lines)  # a regex has no obvious URL


def test_a_tls_listener_is_shown_as_https(tmp_path: Path) -> None:
    write_pair(tmp_path, *make_ca().issue("localhost", dns_names=("localhost",)), stem="edge")
    (tmp_path / "gateway.yaml").write_text(
        "regions: [eu-west]\n"
        "listeners:\n"
        "  - {name: public, address: 0.0.0.0, port: 8443, tls: {certificate: edge.pem, key: edge-key.pem}}\n"
        "services: [{name: accounts, endpoints: [{address: 127.0.0.1:9001, region: eu-west}]}]\n"
        "routes: [{name: accounts, match: {prefix: /v1/accounts}, service: accounts}]\n")
    lines = try_lines(load_config(tmp_path))
    assert any("https://127.0.0.1:8443/v1/accounts/example" in line for line in lines), lines


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


def test_stores_say_why_they_are_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(EXAMPLE)
    assert stores(args(no_redis=True), config).why_memory == "--no-redis was given"
    monkeypatch.setattr(launch_plan, "_redis_server", lambda: None)
    found = stores(args(), config)
    assert found.redis_url is None and found.why_memory == "redis-server is not installed"
    monkeypatch.setattr(launch_plan, "_redis_server", lambda: "/usr/bin/redis-server")
    assert stores(args(redis_port=7000), config).redis_url == "redis://127.0.0.1:7000/0"
