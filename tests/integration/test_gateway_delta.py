"""The real Envoy on Delta xDS (`pavilion envoy-bootstrap --delta`): routing works, an edit is pushed
(and only what changed), a NACK is shown and never answered with the same resources, and route
switches under load lose no request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gateway_procs import Gateway, running_gateway, start_upstreams
from tests.integration.test_gateway_reload import (
    BASE,
    changed_cluster_warm_seconds,
    check_refused_listener_is_shown_and_never_resent,
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
    check_refused_listener_is_shown_and_never_resent(gateway)


def test_delta_route_switches_under_load_lose_no_request(gateway: Gateway) -> None:
    sent, failures = switch_route_under_load(gateway, switches=10, max_requests=3000)
    print(f"10 switches under load on Delta: {sent} requests, {len(failures)} failed")
    assert sent > 50
    assert failures == []


def test_delta_changed_cluster_warms_at_once(gateway: Gateway) -> None:
    took = changed_cluster_warm_seconds(gateway)
    assert took < 4.0  # a changed cluster that waited for endpoints would stay warming 5 s or more
