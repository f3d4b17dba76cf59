"""The real Envoy on Delta xDS (`pavilion envoy-bootstrap --delta`): routing works, an edit is pushed
(and only what changed), a NACK is shown and never answered with the same resources, and route
switches under load lose no request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams
from tests.integration.test_gateway_reload import (
    BASE,
    changed_cluster_warm_seconds,
    pushes,
    seconds_until_served,
    switch_route_under_load,
)
from tests.procs import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config_dir: Path = tmp_path_factory.mktemp("routes")
    listen = free_port()
    upstreams = start_upstreams({"blue": "eu-west", "green": "eu-west"})
    ports = {name: port for name, (_proc, port) in upstreams.items()}
    (config_dir / "base.yaml").write_text(BASE.format(listen=listen, **ports))
    with running_gateway(config_dir, listen, upstreams, delta=True) as gw:
        gw.plane.wait_synced(1)
        yield gw


def test_delta_envoy_routes_and_an_edit_sends_only_the_route_table(gateway: Gateway) -> None:
    status = gateway.plane.wait_current(1)
    assert status["nodes"][0]["kind"] == "delta"
    assert gateway.get("/base").served_by == "blue"
    before = {kind: pushes(gateway, kind) for kind in ("Cluster", "ClusterLoadAssignment", "Listener")}
    path = gateway.plane.config_dir / "late.yaml"
    path.write_text("routes:\n  - {name: late, match: {prefix: /late}, service: green}\n")
    try:
        seconds_until_served(gateway, "/late", "green")
        gateway.plane.wait_current(1)
        # only the RouteConfiguration changed: no cluster, endpoint or listener went out again
        assert {kind: pushes(gateway, kind) for kind in before} == before
    finally:
        path.unlink()
    gateway.plane.wait_current(1)


def test_delta_nack_is_shown_and_never_resent(gateway: Gateway) -> None:
    plane = gateway.plane
    good = plane.wait_current(1)
    acked = good["nodes"][0]["types"]["Listener"]["acked_version"]
    bad = plane.config_dir / "remote.yaml"
    bad.write_text(f"listeners:\n  - {{name: remote, address: 192.0.2.10, port: {free_port()}}}\n")
    try:
        deadline = time.monotonic() + 10
        listener: dict[str, Any] = {}
        while time.monotonic() < deadline and "last_nack" not in listener:
            time.sleep(0.05)
            listener = plane.status()["nodes"][0]["types"]["Listener"]
        assert "cannot bind '192.0.2.10" in listener["last_nack"]["error"], listener
        assert listener["acked_version"] == acked
        while time.monotonic() < deadline and listener["sent_version"] != acked:
            time.sleep(0.05)  # the refused listener is left out (never accepted): one push of the fallback
            listener = plane.status()["nodes"][0]["types"]["Listener"]
        assert listener["sent_version"] == listener["acked_version"] == acked, listener
        sent = pushes(gateway, "Listener")
        time.sleep(1.0)
        assert pushes(gateway, "Listener") == sent
        assert gateway.get("/base").served_by == "blue"
    finally:
        bad.unlink()
    fixed = plane.wait_current(1)["nodes"][0]["types"]["Listener"]
    assert fixed["acked_version"] not in (None, listener["last_nack"]["version"])


def test_delta_route_switches_under_load_lose_no_request(gateway: Gateway) -> None:
    sent, failures = switch_route_under_load(gateway, switches=10, max_requests=3000)
    print(f"10 switches under load on Delta: {sent} requests, {len(failures)} failed")
    assert sent > 50
    assert failures == []


def test_delta_changed_cluster_warms_at_once(gateway: Gateway) -> None:
    took = changed_cluster_warm_seconds(gateway)
    assert took < 4.0  # a changed cluster that waited for endpoints would stay warming 5 s or more
