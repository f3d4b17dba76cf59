"""Two control-plane processes serving the same directory give byte-identical resources and the same
versions, in SotW and in Delta, so a proxy moving between them sees no change: scripted clients
compare bytes, and a real Envoy whose bootstrap lists both replicas moves from one to the other
without adding, modifying or reloading anything."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from ruamel.yaml import YAML

from controlplane import resources as urls
from controlplane.bootstrap import render_bootstrap
from tests.controlplane.ads_client import AdsClient
from tests.controlplane.delta_client import DeltaClient
from tests.integration.gateway_procs import ControlPlane, request, start_controlplane
from tests.procs import ENVOY, Proc, free_port, start_echo

pytestmark = pytest.mark.integration

CONFIG = """
regions: [eu-west, us-east]
listeners: [{name: public, address: 127.0.0.1, port: 10000}, {name: admin, address: 127.0.0.1, port: 10001}]
services:
  - name: blue
    endpoints: [{address: 127.0.0.1:9000, region: eu-west}, {address: 127.0.0.1:9001, region: us-east}]
  - name: green
    endpoints: [{address: 127.0.0.1:9002, region: eu-west}]
routes:
  - {name: a, listener: public, match: {prefix: /a}, service: blue, timeout: 2s, retries: {attempts: 2, on: [5xx]}}
  - {name: b, listener: admin, match: {prefix: /b}, backends: [{service: blue, weight: 30},
                                                                {service: green, weight: 70}]}
  - {name: c, listener: public, hosts: [api.example.com], match: {path: /c, headers: {x-team: blue}}, service: green}
"""
WANTED = ((urls.CLUSTER, ()), (urls.ENDPOINT, ("blue", "green")), (urls.LISTENER, ()),
          (urls.ROUTE, ("admin", "public")))
DELTA_WANTED = (*WANTED, (urls.VIRTUAL_HOST, ()))  # Delta gets the tables' virtual hosts over VHDS


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, ControlPlane]]:
    config_dir: Path = tmp_path_factory.mktemp("routes")
    (config_dir / "gateway.yaml").write_text(CONFIG)
    first = start_controlplane(config_dir)
    try:
        second = start_controlplane(config_dir)
        try:
            yield first, second
        finally:
            second.proc.stop()
    finally:
        first.proc.stop()


async def sotw_view(port: int, region: str) -> dict[str, tuple[str, list[bytes]]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = AdsClient(channel, region=region)
        seen = {}
        for type_url, names in WANTED:
            await client.request(type_url, names)
            response = await client.response(10)
            seen[type_url] = (response.version_info,
                              [r.SerializeToString(deterministic=True) for r in response.resources])
            await client.ack(response, names)
        await client.close()
        return seen


async def delta_view(port: int, region: str, initial: dict[str, dict[str, str]] | None = None
                     ) -> dict[str, dict[str, tuple[str, bytes]]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = DeltaClient(channel, region=region)
        seen: dict[str, dict[str, tuple[str, bytes]]] = {}
        for type_url, names in DELTA_WANTED:
            await client.request(type_url, names, initial=(initial or {}).get(type_url))
            if initial is not None:
                await client.silence(0.5)  # it holds exactly what this replica would send
                continue
            response = await client.response(10)
            seen[type_url] = {r.name: (r.version, r.resource.SerializeToString(deterministic=True))
                              for r in response.resources}
            await client.ack(response)
        await client.close()
        return seen


@pytest.mark.parametrize("region", ["eu-west", "us-east"])
def test_two_replicas_serve_identical_bytes_and_versions(replicas: tuple[ControlPlane, ControlPlane],
                                                         region: str) -> None:
    first, second = replicas
    assert first.status()["version"] == second.status()["version"]
    sotw = [asyncio.run(sotw_view(plane.xds_port, region)) for plane in replicas]
    assert sotw[0] == sotw[1]
    assert all(sotw[0][type_url][1] for type_url, _ in WANTED)  # something was compared
    delta = [asyncio.run(delta_view(plane.xds_port, region)) for plane in replicas]
    assert delta[0] == delta[1] and delta[0][urls.VIRTUAL_HOST]
    # A Delta proxy moving from one replica to the other with what it holds gets nothing new.
    held = {type_url: {name: version for name, (version, _) in resources.items()}
            for type_url, resources in delta[0].items()}
    asyncio.run(delta_view(second.xds_port, region, initial=held))


def envoy_stats(admin_port: int, names: tuple[str, ...]) -> dict[str, int]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats", timeout=5).read().decode()
    values = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {name: int(values.get(name, "-1")) for name in names}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_an_envoy_moving_between_replicas_changes_nothing(tmp_path: Path, delta: bool) -> None:
    listen = free_port()
    with ExitStack() as stack:
        echo, echo_port = start_echo("hello", "eu-west")
        stack.callback(echo.stop)
        (tmp_path / "gateway.yaml").write_text(
            f"regions: [eu-west]\nlisteners: [{{name: public, address: 127.0.0.1, port: {listen}}}]\n"
            f"services: [{{name: hello, endpoints: [{{address: 127.0.0.1:{echo_port}, region: eu-west}}]}}]\n"
            "routes: [{name: hello, match: {prefix: /}, service: hello}]\n")
        planes = []
        for _ in range(2):
            plane = start_controlplane(tmp_path)
            stack.callback(plane.proc.stop)
            planes.append(plane)
        admin_port = free_port()
        yaml = YAML(typ="safe")
        bootstrap = yaml.load(render_bootstrap(node_id="mover", region="eu-west", admin_port=admin_port,
                                               xds_address=f"127.0.0.1:{planes[0].xds_port}", delta=delta))
        endpoints = bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        endpoints.append({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                      "port_value": planes[1].xds_port}}}})
        path = tmp_path / "bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        envoy = Proc([ENVOY, "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"],
                     name="envoy-mover")
        stack.callback(envoy.stop)
        envoy.wait_http(f"http://127.0.0.1:{admin_port}/ready")
        envoy.wait_port(listen)

        def serving() -> ControlPlane | None:
            for plane in planes:
                status = plane.status()
                if status["nodes"] and status["synced"]:  # every type its group is served, not only the first
                    return plane
            return None

        deadline = time.monotonic() + 15
        while (first := serving()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first is not None
        names = ("cluster_manager.cluster_added", "cluster_manager.cluster_modified",
                 "listener_manager.listener_added", "listener_manager.listener_modified",
                 "http.public.rds.public.config_reload")
        before = envoy_stats(admin_port, names)
        assert before["cluster_manager.cluster_added"] >= 1 and before["http.public.rds.public.config_reload"] >= 1
        assert min(before.values()) >= 0, before  # every counter exists, so an equal count means something
        acked = {kind: entry["acked_version"] for kind, entry in first.status()["nodes"][0]["types"].items()}
        # Synced means every type its group is served, though Envoy subscribes one after another.
        assert set(acked) == {"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration",
                              *(["VirtualHost"] if delta else [])}, acked
        first.proc.stop()
        assert request(f"http://127.0.0.1:{listen}/while-moving").served_by == "hello"
        other = planes[1] if first is planes[0] else planes[0]
        moved = other.wait_synced(1, timeout=30)  # Envoy's reconnect backoff
        assert {kind: entry["acked_version"] for kind, entry in moved["nodes"][0]["types"].items()} == acked
        assert envoy_stats(admin_port, names) == before  # nothing was added, modified or reloaded
        assert request(f"http://127.0.0.1:{listen}/after").served_by == "hello"
