"""Two control-plane processes serving the same directory give byte-identical resources and the same
versions, in SotW and in Delta, so a proxy moving between them sees no change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from controlplane import resources as urls
from tests.controlplane.ads_client import AdsClient
from tests.controlplane.delta_client import DeltaClient
from tests.integration.gateway_procs import ControlPlane, start_controlplane

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
        for type_url, names in WANTED:
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
    assert delta[0] == delta[1]
    # A Delta proxy moving from one replica to the other with what it holds gets nothing new.
    held = {type_url: {name: version for name, (version, _) in resources.items()}
            for type_url, resources in delta[0].items()}
    asyncio.run(delta_view(second.xds_port, region, initial=held))
