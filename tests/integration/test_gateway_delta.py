"""The real Envoy on Delta xDS (`pavilion envoy-bootstrap --delta`): routing works, an edit is pushed
(and only what changed), a NACK is shown and never answered with the same resources, and route
switches under load lose no request."""

from __future__ import annotations

import re
import time
import urllib.request
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


def test_delta_envoy_routes_and_an_edit_sends_only_the_routes_virtual_host(gateway: Gateway) -> None:
    status = gateway.plane.wait_current(1)
    assert status["nodes"][0]["kind"] == "delta"
    assert gateway.get("/base").served_by == "blue"
    kinds = ("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration")
    before = {kind: pushes(gateway, kind) for kind in kinds}
    hosts_before = pushes(gateway, "VirtualHost")
    path = gateway.plane.config_dir / "late.yaml"
    path.write_text("routes:\n  - {name: late, match: {prefix: /late}, service: green}\n")
    try:
        seconds_until_served(gateway, "/late", "green")
        gateway.plane.wait_current(1)
        # only a virtual host changed: no cluster, endpoint, listener or route table went out again
        assert {kind: pushes(gateway, kind) for kind in kinds} == before
        assert pushes(gateway, "VirtualHost") > hosts_before
    finally:
        path.unlink()
    gateway.plane.wait_current(1)


def test_delta_edit_of_a_route_with_its_own_host_sends_that_route_alone(gateway: Gateway) -> None:
    path = gateway.plane.config_dir / "hosts.yaml"
    routes = ("routes:\n"
              "  - {{name: one, hosts: [one.test], match: {{prefix: {prefix}}}, service: green}}\n"
              "  - {{name: two, hosts: [two.test], match: {{prefix: /two}}, service: blue}}\n")
    path.write_text(routes.format(prefix="/one"))
    try:
        wait_served(gateway, "/one", "green", "one.test")
        gateway.plane.wait_current(1)
        sent = pushed_bytes(gateway)
        path.write_text(routes.format(prefix="/uno"))
        wait_served(gateway, "/uno", "green", "one.test")
        gateway.plane.wait_current(1)
        grown = {kind: size - sent.get(kind, 0) for kind, size in pushed_bytes(gateway).items()}
        assert {kind for kind, size in grown.items() if size} == {"VirtualHost"}
        assert grown["VirtualHost"] < 400  # route `one` alone, in its virtual host `public/one.test`
        assert gateway.get("/two", headers={"Host": "two.test"}).served_by == "blue"
        assert gateway.get("/one", headers={"Host": "one.test"}).status == 404
    finally:
        path.unlink()
    gateway.plane.wait_current(1)


def wait_served(gateway: Gateway, path: str, name: str, host: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while gateway.get(path, headers={"Host": host}).served_by != name:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}{path} not served by {name} within {timeout} s")
        time.sleep(0.01)


def pushed_bytes(gateway: Gateway) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{gateway.plane.admin_port}/metrics", timeout=5).read().decode()
    found = re.findall(r'^pavilion_xds_push_bytes_total\{type="([^"]+)"\} (\S+)$', text, re.MULTILINE)
    return {kind: float(value) for kind, value in found}


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
